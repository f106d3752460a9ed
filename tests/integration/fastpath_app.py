"""A Faust app for tests/integration/test_fastpath.py: agents that record what they take.

`faust -A tests.integration.fastpath_app worker` with KAFKA_BROKERS, FP_TOPIC, FP_GROUP,
FP_DATA_DIR, FP_OUT (a directory), FP_NAME (this worker's name), FP_FAST (1: with
orderstream/fastpath.py, 0: stock Faust), FP_MODE, FP_DELAY (seconds each batch takes
before it is acked), FP_BATCH (events a batch) and FP_BUFFER (a channel queue's size). Modes:

- ``take``: one agent, `noack_take` batches acked by hand, as the service's agent;
- ``two``: two such agents on the same topic (two subscribers of each partition);
- ``json``: values are JSON records; a decoding error is recorded and the agent takes on.

Files in FP_OUT, each line written before the next step: ``<name>.seen`` ("agent partition
offset" per event taken, before its batch is acked), ``<name>.acked`` ("partition offset"
after the ack), ``<name>.errors`` (decoding errors) and ``<name>.stats`` (the fast consumer's
inline/guarded counts, JSON).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import faust
from faust.exceptions import ValueDecodeError

from orderstream import fastpath

OUT = Path(os.environ["FP_OUT"])
NAME = os.environ["FP_NAME"]
MODE = os.environ.get("FP_MODE", "take")
DELAY = float(os.environ.get("FP_DELAY", "0"))
BATCH = int(os.environ.get("FP_BATCH", "100"))

app = faust.App(
    os.environ["FP_GROUP"],
    broker=";".join(f"kafka://{b}" for b in os.environ["KAFKA_BROKERS"].split(",")),
    key_serializer="raw",
    value_serializer="raw",
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    store="memory://",
    datadir=os.environ["FP_DATA_DIR"],
    broker_commit_interval=0.5,
    broker_session_timeout=10.0,
    broker_heartbeat_interval=3.0,
    stream_buffer_maxsize=int(os.environ.get("FP_BUFFER", "4096")),
)
if os.environ.get("FP_FAST", "1") == "1":
    fastpath.install(app)


class Item(faust.Record, serializer="json"):
    value: int


topic = (
    app.topic(os.environ["FP_TOPIC"], key_type=bytes, value_type=Item)
    if MODE == "json"
    else app.topic(os.environ["FP_TOPIC"], key_type=bytes, value_type=bytes)
)


def append(suffix: str, lines: list[str]) -> None:
    with (OUT / f"{NAME}.{suffix}").open("a") as file:
        file.write("".join(line + "\n" for line in lines))


def write_stats() -> None:
    consumer: Any = app.consumer
    stats = {
        "inline": getattr(consumer, "delivered_inline", None),
        "guarded": getattr(consumer, "delivered_guarded", None),
    }
    (OUT / f"{NAME}.stats").write_text(json.dumps(stats))


async def take_and_record(agent: str, stream: Any) -> None:
    """Record each batch, wait FP_DELAY, ack it, record the acks."""
    while True:
        try:
            async for events in stream.noack_take(BATCH, within=0.2):
                append(
                    "seen",
                    [f"{agent} {e.message.partition} {e.message.offset}" for e in events],
                )
                if DELAY:
                    await asyncio.sleep(DELAY)
                for event in events:
                    await stream.ack(event)
                append("acked", [f"{e.message.partition} {e.message.offset}" for e in events])
                write_stats()
            return  # the stream ended: the agent is stopping
        except ValueDecodeError as exc:
            if MODE != "json":
                raise
            append("errors", [type(exc).__name__])
            write_stats()


@app.agent(topic, name="first")
async def first(stream: Any) -> None:
    await take_and_record("first", stream)


if MODE == "two":

    @app.agent(topic, name="second")
    async def second(stream: Any) -> None:
        await take_and_record("second", stream)
