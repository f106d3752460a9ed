"""Tracing: what OpenTelemetry costs ingest and lookups, off (the default) and on.

N orders, each with a W3C traceparent header as a tracing producer sends them, are produced to
a topic once. Then, in rounds of off and on (interleaved, so that a slow spell of a shared
machine hits both), a worker of a new group on an empty database stores and caches them all
(timed from its /ready), and is loaded with lookups of cached ids. On: OTEL_TRACES_EXPORTER=otlp
to an OTLP/HTTP receiver on the loopback (harness.OtlpSink), every span sampled and exported.
The best run of each counts. Off, the code on the hot paths is also timed in this process: the
tracing helpers a batch calls (a lookup calls none: its handler is the untraced one).
"""

from __future__ import annotations

import asyncio
import os
import time
import timeit
from argparse import Namespace
from typing import Any

from aiokafka import AIOKafkaProducer

from harness import OtlpSink
from orderstream import tracing

from ..lab import Dataset, Lab
from ..lab.load import run_python
from ..report import Report, show

ROUNDS = 2


async def run(lab: Lab, args: Namespace) -> Report:
    report = Report(
        "tracing",
        {
            "orders": args.orders,
            "partitions": args.partitions,
            "batch_size": args.batch_size,
            "duration_s": args.duration,
            "connections": list(args.connections),
            "seed": args.seed,
            "rounds": ROUNDS,
            "load_generator": f"python aiohttp (bounded to {args.max_requests:,} requests a cell)",
        },
    )
    dataset = lab.dataset(args.orders)
    topic = await lab.topic(args.partitions)
    produced_s = await produce_traced(lab.brokers, topic, dataset)
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    # The receiver only counts what it gets: parsing it would load this process, the load
    # generator's, during the on runs only.
    async with OtlpSink(parse=False) as sink:
        for _ in range(ROUNDS):
            for mode in runs:
                runs[mode].append(
                    await one_run(lab, args, dataset, topic, sink if mode == "on" else None)
                )
        exported = {"requests": sink.requests, "bytes": sink.bytes}
    best = {
        mode: {
            "ingest_orders_per_s": max(r["ingest_orders_per_s"] for r in mode_runs),
            "lookups": {
                str(c): max(
                    (r["lookups"][str(c)] for r in mode_runs),
                    key=lambda cell: cell["requests_per_s"],
                )
                for c in args.connections
            },
        }
        for mode, mode_runs in runs.items()
    }
    report.results = {
        "produce_s": produced_s,
        "runs": runs,
        "best": best,
        "spans_exported": exported,
        "off_helpers": off_helper_cost(args.batch_size),
    }
    report.notes.append(
        "on: OTLP/HTTP to a receiver on the loopback, parentbased_always_on "
        "(every message carries a sampled traceparent: all spans exported)"
    )
    print_tracing(report)
    return report


async def produce_traced(brokers: str, topic: str, dataset: Dataset) -> float:
    """The dataset keyed by order_uid, each message with a traceparent of its own trace."""
    started = time.perf_counter()
    producer = AIOKafkaProducer(
        bootstrap_servers=brokers, acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        sent = [
            await producer.send(
                topic,
                body,
                key=key,
                headers=[
                    ("traceparent", f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01".encode())
                ],
            )
            for key, body in zip(dataset.keys, dataset.bodies, strict=True)
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def one_run(
    lab: Lab, args: Namespace, dataset: Dataset, topic: str, sink: OtlpSink | None
) -> dict[str, Any]:
    pg_url = await lab.database()
    settings = {
        "PG_URL": pg_url,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP_ID": lab.name("group"),
        "KAFKA_PARTITIONS": str(args.partitions),
        "BATCH_SIZE": str(args.batch_size),
        "CACHE_SIZE": str(dataset.n * args.partitions),
    }
    if sink is not None:
        settings |= {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint}
    worker = lab.start_worker(**settings)
    ready_s, stored_s, cached_s = await asyncio.gather(
        worker.wait_ready(), worker.wait_stored(pg_url, dataset.n), worker.wait_cached(dataset.n)
    )
    done_s = max(stored_s, cached_s)
    seconds = done_s - ready_s if done_s > ready_s else done_s
    lookups = {}
    for connections in args.connections:
        load = await run_python(
            worker.url, dataset.uids, "", connections, args.duration, args.max_requests
        )
        lookups[str(connections)] = load.as_dict()
    await lab.stop_worker(worker)
    return {
        "tracing": "on" if sink else "off",
        "ingest_s": seconds,
        "ingest_orders_per_s": dataset.n / seconds,
        "lookups": lookups,
    }


def off_helper_cost(batch_size: int) -> dict[str, float]:
    """Nanoseconds the tracing helpers of one batch take with tracing off (this process has
    not set it up): start_batch, within, 4 steps and annotate."""
    assert not tracing.enabled()
    events: list[Any] = []

    def one_batch() -> None:
        span = tracing.start_batch("orders", events)
        with tracing.within(span, "validate"):
            pass
        for name in ("forward", "store", "dead_letter", "cache"):
            with tracing.step(name, orders=batch_size):
                pass
        tracing.annotate(written=batch_size, refused=0)

    number = 100_000
    per_batch = min(timeit.repeat(one_batch, number=number, repeat=5)) / number * 1e9
    return {
        "ns_per_batch": per_batch,
        "ns_per_order_at_batch_size": per_batch / batch_size,
        "ns_per_lookup": 0.0,
    }


def print_tracing(report: Report) -> None:
    r, n = report.results, report.parameters["orders"]
    off, on = r["best"]["off"], r["best"]["on"]
    rows: list[list[Any]] = [
        [
            "ingest, orders/s",
            off["ingest_orders_per_s"],
            on["ingest_orders_per_s"],
            on["ingest_orders_per_s"] / off["ingest_orders_per_s"],
        ]
    ]
    for connections, cell in off["lookups"].items():
        traced = on["lookups"][connections]
        rows.append(
            [
                f"cache hits, req/s, {connections} conns",
                cell["requests_per_s"],
                traced["requests_per_s"],
                traced["requests_per_s"] / cell["requests_per_s"],
            ]
        )
        rows.append(
            [
                f"cache hits, p99 ms, {connections} conns",
                cell["p99_ms"],
                traced["p99_ms"],
                traced["p99_ms"] / cell["p99_ms"],
            ]
        )
    helpers = r["off_helpers"]
    show(
        f"tracing: {n:,} orders, best of {report.parameters['rounds']} interleaved runs",
        ["", "off", "on", "on / off"],
        rows,
        [
            f"off, in-process: the helpers of one batch take {helpers['ns_per_batch']:.0f} ns "
            f"({helpers['ns_per_order_at_batch_size']:.2f} ns an order at BATCH_SIZE); a lookup "
            "runs no tracing code",
            f"on: the OTLP receiver got {r['spans_exported']['requests']:,} export requests, "
            f"{r['spans_exported']['bytes'] / 1e6:.1f} MB",
            *report.notes,
        ],
    )
