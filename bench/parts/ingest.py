"""Ingest: the worker storing and caching N pre-produced orders, beside the floors and naive design.

All four read or write the same N orders (the same bytes on the same topic, the same schema):
- ours: a worker started on the topic and an empty database, until every order is in PostgreSQL
  and in the cache;
- Kafka floor: a bare aiokafka consumer reading and decoding every message;
- PostgreSQL floor: OrderRepository.upsert_encoded in batches of BATCH_SIZE, no Kafka (the
  service's statement); on 1 connection, and each batch split in 2 parts written at once on 2
  (``pg_floor_2``: the worker's default PG_WRITE_CONNECTIONS);
- COPY floor (lab/pg_floor.py): the fastest durable upsert of the same batches into the same
  tables, binary COPY into temporary tables then INSERT ... SELECT, on 1 and on 2 connections;
  and COPY with the service's rules (versions, uids written), the candidate write path, on 1
  and on 2 (each batch split as pg_floor_2's);
- naive: one transaction per order, one INSERT per table and per item, on a sample when N is large.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from argparse import Namespace
from datetime import date
from typing import Any

from aiokafka import AIOKafkaConsumer

from orderstream.order.records import Order, decode_order

from ..lab import Dataset, Lab, count_orders, truncate, write_batches
from ..lab.cpu import CpuReading
from ..lab.flamegraph import Profile
from ..lab.naive import store_naively
from ..lab.pg_floor import copy_upsert, statement_upsert
from ..report import REPO_ROOT, Report, show


async def run(lab: Lab, args: Namespace) -> Report:
    report = Report(
        "ingest",
        {
            "orders": args.orders,
            "partitions": args.partitions,
            "batch_size": args.batch_size,
            "naive_sample": min(args.naive_sample, args.orders),
            "seed": args.seed,
        },
    )
    dataset = lab.dataset(args.orders)
    pg_url = await lab.database()
    topic = await lab.topic(args.partitions)
    produced = await lab.produce(topic, dataset.keys, dataset.bodies)
    r = report.results
    r["setup"] = {
        "produce_s": produced,
        "body_bytes_mean": sum(map(len, dataset.bodies)) / dataset.n,
        "items_mean": sum(len(o.items) for o in dataset.orders) / dataset.n,
    }

    # The floors and the naive design run before and after ours and the faster run counts:
    # on a shared machine a slow spell during a baseline would flatter ours.
    sample = dataset.orders[: report.parameters["naive_sample"]]
    before = await baselines(lab, dataset, sample, pg_url, topic, args.batch_size)
    await truncate(pg_url)
    r["ours"] = await ours(lab, args, dataset, pg_url, topic)
    after = await baselines(lab, dataset, sample, pg_url, topic, args.batch_size)
    for name in ("kafka_floor", "naive", "pg_floor", "pg_floor_2", *COPY_ROWS):
        runs = [before[name], after[name]]
        r[name] = {
            **max(runs, key=lambda run: run["orders_per_s"]),
            "runs_orders_per_s": [run["orders_per_s"] for run in runs],
        }
    lab.adopt_seeded(dataset, pg_url)  # it now holds exactly the dataset: later parts reuse it
    # Not a floor of the issue's: it shows how much of the gap Faust itself accounts for,
    # stock and with orderstream/fastpath.py (the service's default), interleaved A B B A.
    faust_runs: dict[str, list[dict[str, Any]]] = {"faust_floor": [], "faust_floor_fast": []}
    for name in ("faust_floor", "faust_floor_fast", "faust_floor_fast", "faust_floor"):
        faust_runs[name].append(
            await faust_floor(
                lab, topic, dataset.n, args.batch_size, fast=name == "faust_floor_fast"
            )
        )
    for name, both in faust_runs.items():
        r[name] = {
            **max(both, key=lambda run: run["orders_per_s"]),
            "runs_orders_per_s": [run["orders_per_s"] for run in both],
        }

    floors = min(r["kafka_floor"]["orders_per_s"], r["pg_floor"]["orders_per_s"])
    rate = r["ours"]["orders_per_s"]
    r["ratios"] = {
        "ours_to_slower_floor": rate / floors,
        "ours_to_naive": rate / r["naive"]["orders_per_s"],
        "ours_to_faust_floor": rate / r["faust_floor"]["orders_per_s"],
        "ours_to_faust_floor_fast": rate / r["faust_floor_fast"]["orders_per_s"],
        "faust_fast_to_stock": r["faust_floor_fast"]["orders_per_s"]
        / r["faust_floor"]["orders_per_s"],
        "ours_to_copy_floor": rate / r["copy_floor"]["orders_per_s"],
        "ours_to_copy_floor_2": rate / r["copy_floor_2"]["orders_per_s"],
        "service_statement_to_copy_floor": r["pg_floor"]["orders_per_s"]
        / r["copy_floor"]["orders_per_s"],
        "copy_versioned_to_service_statement": r["copy_versioned"]["orders_per_s"]
        / r["pg_floor"]["orders_per_s"],
        "copy_floor_2_to_1": r["copy_floor_2"]["orders_per_s"] / r["copy_floor"]["orders_per_s"],
        "ours_to_slower_floor_2": rate
        / min(r["kafka_floor"]["orders_per_s"], r["pg_floor_2"]["orders_per_s"]),
        "pg_floor_2_to_1": r["pg_floor_2"]["orders_per_s"] / r["pg_floor"]["orders_per_s"],
        "copy_versioned_2_to_pg_floor_2": r["copy_versioned_2"]["orders_per_s"]
        / r["pg_floor_2"]["orders_per_s"],
    }
    if r["naive"]["sample"] < dataset.n:
        report.notes.append(
            f"naive: measured on the first {len(sample):,} orders and extrapolated to {dataset.n:,}"
        )
    report.notes.append(
        "floors and naive: run before and after ours, the faster run counts "
        "(orders/s of both runs in the results file)"
    )
    report.notes.append(
        f"ours: rate {r['ours']['basis']}, until every order is in PostgreSQL and in the cache"
    )
    print_ingest(report)
    return report


async def ours(
    lab: Lab, args: Namespace, dataset: Dataset, pg_url: str, topic: str
) -> dict[str, Any]:
    """Start a worker on the pre-produced topic; time it until all is stored and cached."""
    settings = {
        "PG_URL": pg_url,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP_ID": lab.name("group"),
        "KAFKA_PARTITIONS": str(args.partitions),
        "BATCH_SIZE": str(args.batch_size),
        # room for every order in each partition: nothing is evicted
        "CACHE_SIZE": str(dataset.n * args.partitions),
    }
    worker = lab.start_worker(**settings)
    profile = (
        Profile(
            worker.pid, args.results_dir / f"{date.today().isoformat()}-ingest-profile.txt"
        ).start()
        if args.profile
        else None
    )

    async def ready() -> tuple[float, CpuReading]:
        return await worker.wait_ready(), CpuReading.now(worker.pid)

    (ready_s, cpu_at_ready), stored_s, cached_s = await asyncio.gather(
        ready(), worker.wait_stored(pg_url, dataset.n), worker.wait_cached(dataset.n)
    )
    cpu_per_order = cpu_at_ready.per_order_us(CpuReading.now(worker.pid), dataset.n)
    profiled = profile.stop() if profile else None
    metrics = await worker.metrics()
    rss = worker.rss()
    await lab.stop_worker(worker)
    done_s = max(stored_s, cached_s)
    # With a few orders the worker may be done before /ready was first seen.
    from_ready: float | None = done_s - ready_s if done_s > ready_s else None
    seconds, basis = (
        (from_ready, "from /ready") if from_ready is not None else (done_s, "from process start")
    )
    batches = metrics.get("orderstream_db_batch_seconds_count", 0)
    result: dict[str, Any] = {
        "settings": settings,  # the rest are the service's defaults
        "ready_s": ready_s,
        "stored_s": stored_s,
        "cached_s": cached_s,
        "done_from_start_s": done_s,
        "done_from_ready_s": from_ready,
        "orders_per_s_from_start": dataset.n / done_s,
        "orders_per_s_from_ready": dataset.n / from_ready if from_ready else None,
        "orders_per_s": dataset.n / seconds,
        "basis": basis,
        "db_batches": batches,
        "db_batch_mean_size": metrics.get("orderstream_db_batch_size_sum", 0) / batches
        if batches
        else None,
        "db_batch_seconds_total": metrics.get("orderstream_db_batch_seconds_sum"),
        "dead_lettered": metrics.get("orderstream_orders_dead_lettered_total", 0),
        "forwarded": metrics.get("orderstream_orders_forwarded_total", 0),
        "worker_rss_bytes_at_end": rss,
        # From /ready to all stored and cached (lab/cpu.py): what bounds ingest on few cores.
        "cpu_us_per_order": cpu_per_order,
    }
    if profiled:
        result["profile"] = profiled
    return result


# The COPY rows of lab/pg_floor.py: (connections, with the service's rules); the versioned
# ones split each batch over their connections, as the worker does.
COPY_ROWS = {
    "copy_versioned": (1, True),
    "copy_versioned_2": (2, True),
    "copy_floor": (1, False),
    "copy_floor_2": (2, False),
}


async def baselines(
    lab: Lab, dataset: Dataset, sample: list[Order], pg_url: str, topic: str, batch_size: int
) -> dict[str, dict[str, Any]]:
    """The Kafka floor, the naive design, the COPY rows and the PostgreSQL floor, once each;
    the database ends up holding exactly the dataset, written by the service's statement."""
    result = {"kafka_floor": await kafka_floor(lab.brokers, topic, dataset.n, lab.timeout)}
    await truncate(pg_url)
    naive_s = await store_naively(pg_url, sample)
    result["naive"] = {
        "sample": len(sample),
        "sample_s": naive_s,
        "orders_per_s": len(sample) / naive_s,
        "extrapolated_s": dataset.n * naive_s / len(sample),
    }
    encoded = [
        (uid, body, offset)
        for offset, (uid, body) in enumerate(zip(dataset.uids, dataset.bodies, strict=True))
    ]
    for name, (connections, versioned) in COPY_ROWS.items():
        await truncate(pg_url)
        copy_s = await copy_upsert(
            pg_url,
            encoded,
            batch_size,
            connections=connections,
            versioned=versioned,
            split=versioned,
        )
        if await count_orders(pg_url) != dataset.n:
            raise RuntimeError(f"{name} did not store every order")
        result[name] = {"seconds": copy_s, "orders_per_s": dataset.n / copy_s}
    await truncate(pg_url)
    pg_2_s = await statement_upsert(pg_url, encoded, batch_size, connections=2)
    if await count_orders(pg_url) != dataset.n:
        raise RuntimeError("the PostgreSQL floor on 2 connections did not store every order")
    result["pg_floor_2"] = {"seconds": pg_2_s, "orders_per_s": dataset.n / pg_2_s}
    await truncate(pg_url)
    pg_s = await write_batches(pg_url, dataset, batch_size)
    if await count_orders(pg_url) != dataset.n:
        raise RuntimeError("the PostgreSQL floor did not store every order")
    result["pg_floor"] = {"seconds": pg_s, "orders_per_s": dataset.n / pg_s}
    return result


async def faust_floor(
    lab: Lab,
    topic: str,
    n: int,
    batch_size: int,
    *,
    fast: bool = False,
    cython_optimizations: bool = False,
    loop: str = "",
) -> dict[str, Any]:
    """bench/lab/faust_floor_app.py on the topic: Faust taking and acking every message,
    stock or with orderstream/fastpath.py (``fast``), on asyncio or ``loop`` (uvloop)."""
    result = lab.path("faust-floor-result")
    env = {
        **os.environ,
        "FLOOR_TOPIC": topic,
        "FLOOR_ORDERS": str(n),
        "FLOOR_GROUP": lab.name("faust-floor"),
        "KAFKA_BROKERS": lab.brokers,
        "BATCH_SIZE": str(batch_size),
        "FLOOR_DATA_DIR": str(lab.path("faust-floor")),
        "FLOOR_RESULT": str(result),
        "FLOOR_FAST_PATH": "1" if fast else "0",
        "FLOOR_CYTHON_OPTIMIZATIONS": "1" if cython_optimizations else "0",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "faust",
        "-A",
        "bench.lab.faust_floor_app",
        *(["--loop", loop] if loop else []),
        "worker",
        "-l",
        "warn",
        "--without-web",
        env=env,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), lab.timeout)
    except TimeoutError:
        process.kill()
        raise RuntimeError(f"Faust floor: not done within {lab.timeout:.0f}s") from None
    if process.returncode != 0 or not result.exists():
        raise RuntimeError(
            f"Faust floor exited with {process.returncode}: "
            f"{output.decode(errors='replace')[-2000:]}"
        )
    return json.loads(result.read_text())


async def kafka_floor(brokers: str, topic: str, n: int, timeout: float) -> dict[str, Any]:
    """A bare consumer (no group) reading and decoding all ``n`` messages from the start."""
    started = time.perf_counter()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=brokers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    count, decoding = 0, 0.0
    try:
        while count < n:
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"Kafka floor: {count} of {n} messages within {timeout:.0f}s")
            batches = await consumer.getmany(timeout_ms=1000)
            decode_started = time.perf_counter()
            for messages in batches.values():
                for message in messages:
                    decode_order(message.value)
                count += len(messages)
            decoding += time.perf_counter() - decode_started
    finally:
        await consumer.stop()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "decode_s": decoding, "orders_per_s": n / seconds}


def print_ingest(report: Report) -> None:
    r, n = report.results, report.parameters["orders"]
    o = r["ours"]
    rows = [
        [
            "ours: stored and cached",
            o["orders_per_s"],
            o["done_from_start_s"],
            o["done_from_ready_s"],
        ],
        [
            "Kafka floor: consume + decode",
            r["kafka_floor"]["orders_per_s"],
            r["kafka_floor"]["seconds"],
            None,
        ],
        [
            "PostgreSQL floor: upsert_encoded",
            r["pg_floor"]["orders_per_s"],
            r["pg_floor"]["seconds"],
            None,
        ],
        [
            "PostgreSQL floor: 2 connections",
            r["pg_floor_2"]["orders_per_s"],
            r["pg_floor_2"]["seconds"],
            None,
        ],
        [
            "COPY, versioned: the service's rules",
            r["copy_versioned"]["orders_per_s"],
            r["copy_versioned"]["seconds"],
            None,
        ],
        [
            "COPY, versioned: 2 connections",
            r["copy_versioned_2"]["orders_per_s"],
            r["copy_versioned_2"]["seconds"],
            None,
        ],
        [
            "COPY floor: 1 connection",
            r["copy_floor"]["orders_per_s"],
            r["copy_floor"]["seconds"],
            None,
        ],
        [
            "COPY floor: 2 connections",
            r["copy_floor_2"]["orders_per_s"],
            r["copy_floor_2"]["seconds"],
            None,
        ],
        [
            "Faust: take + ack, nothing else",
            r["faust_floor"]["orders_per_s"],
            r["faust_floor"]["seconds"],
            None,
        ],
        [
            "Faust + fastpath.py: take + ack",
            r["faust_floor_fast"]["orders_per_s"],
            r["faust_floor_fast"]["seconds"],
            None,
        ],
        [
            "naive: 1 tx/order, 1 INSERT/row",
            r["naive"]["orders_per_s"],
            r["naive"]["extrapolated_s"],
            None,
        ],
    ]
    show(
        f"ingest: {n:,} orders, {report.parameters['partitions']} partitions",
        ["path", "orders/s", "seconds", "s from /ready"],
        rows,
        [
            *report.notes,
            f"ours/min(floors) = {r['ratios']['ours_to_slower_floor']:.2f}, "
            f"ours/naive = {r['ratios']['ours_to_naive']:.1f}, "
            f"ours/Faust's own = {r['ratios']['ours_to_faust_floor']:.2f} (Faust: not a floor "
            "of the issue's, shown for what Faust's per-message work leaves)",
            f"Faust with fastpath.py/stock = {r['ratios']['faust_fast_to_stock']:.2f}, "
            f"ours/Faust with fastpath.py = {r['ratios']['ours_to_faust_floor_fast']:.2f} "
            "(Faust rows: best of 2 runs, interleaved)",
            f"upsert_encoded/COPY floor = {r['ratios']['service_statement_to_copy_floor']:.2f}, "
            f"COPY versioned/upsert_encoded = "
            f"{r['ratios']['copy_versioned_to_service_statement']:.2f}, "
            f"COPY floor 2 connections/1 = {r['ratios']['copy_floor_2_to_1']:.2f}, "
            f"ours/COPY floor = {r['ratios']['ours_to_copy_floor']:.2f} "
            f"(2 connections: {r['ratios']['ours_to_copy_floor_2']:.2f})",
            f"ours/min(Kafka floor, PostgreSQL floor on 2 connections) = "
            f"{r['ratios']['ours_to_slower_floor_2']:.2f}, upsert_encoded 2 connections/1 = "
            f"{r['ratios']['pg_floor_2_to_1']:.2f}, COPY versioned/upsert_encoded on 2 "
            f"connections = {r['ratios']['copy_versioned_2_to_pg_floor_2']:.2f}",
            f"worker /ready after {o['ready_s']:.1f} s; stored after {o['stored_s']:.1f} s, "
            f"cached after {o['cached_s']:.1f} s (from process start)",
            "CPU per order, from /ready: "
            + ", ".join(
                f"{who} {us:.0f} µs" for who, us in o["cpu_us_per_order"].items() if us is not None
            ),
        ],
    )
