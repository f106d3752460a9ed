"""The Faust floor: a Faust worker whose agent takes batches and acks them, nothing else.

`faust -A bench.lab.faust_floor_app worker` with FLOOR_TOPIC, FLOOR_ORDERS, FLOOR_GROUP,
FLOOR_DATA_DIR, FLOOR_RESULT, KAFKA_BROKERS, BATCH_SIZE, and FLOOR_FAST_PATH (1: with
orderstream/fastpath.py installed, as FAUST_FAST_PATH=true; 0: stock Faust, the default) and
FLOOR_CYTHON_OPTIMIZATIONS (1: Faust's `cython_optimizations` setting on). It consumes the
topic the way the service's agent does (the same serializers, `noack_take` batches, acks by
hand, the same garbage-collector setting) and writes `{"seconds": ..., "orders_per_s": ...}`
(first batch to last) to FLOOR_RESULT and exits.
What is left between this and the Kafka floor is Faust's own work per message.
"""

from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path
from typing import Any

import faust

from orderstream import fastpath

ORDERS = int(os.environ["FLOOR_ORDERS"])
BATCH_SIZE = int(os.environ.get("BATCH_SIZE", "500"))

app = faust.App(
    os.environ["FLOOR_GROUP"],
    broker=";".join(f"kafka://{b}" for b in os.environ["KAFKA_BROKERS"].split(",")),
    key_serializer="raw",
    value_serializer="raw",
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    store="memory://",
    datadir=os.environ["FLOOR_DATA_DIR"],
    cython_optimizations=os.environ.get("FLOOR_CYTHON_OPTIMIZATIONS", "0") == "1",
)
if os.environ.get("FLOOR_FAST_PATH", "0") == "1":
    fastpath.install(app)
orders = app.topic(os.environ["FLOOR_TOPIC"], key_type=bytes, value_type=bytes)


@app.agent(orders)
async def take_and_ack(stream: Any) -> None:
    gc.freeze()  # as orderstream.app.tune_garbage_collector: the floor runs the same GC
    gc.set_threshold(50_000, 20, 20)
    started: float | None = None
    taken = 0
    async for events in stream.noack_take(BATCH_SIZE, within=0.2):
        started = started or time.perf_counter()
        for event in events:
            await stream.ack(event)
        taken += len(events)
        if taken >= ORDERS:
            seconds = time.perf_counter() - started
            Path(os.environ["FLOOR_RESULT"]).write_text(
                json.dumps({"seconds": seconds, "orders_per_s": taken / seconds})
            )
            os._exit(0)
