"""Memory: worker RSS with an empty cache and with N cached orders, per store.

- empty: a worker on an empty database and an empty orders topic, once /ready;
- memory store: a worker of the run's warm group that replayed the changelog of N orders;
- RocksDB store: a worker of the warm group restarted on its RocksDB files, after one lookup of
  every cached order (RocksDB reads from disk what was not read yet: this is the serving state).
RSS is VmRSS of /proc/<pid>/status, read `--settle` seconds after the worker got there.
"""

from __future__ import annotations

import asyncio
from argparse import Namespace
from typing import Any

from ..lab import Lab
from ..lab.warm import ROCKSDB
from ..report import Report, show

MEMORY = "memory://"


async def run(lab: Lab, args: Namespace) -> Report:
    report = Report(
        "memory",
        {
            "orders": args.orders,
            "partitions": args.partitions,
            "settle_s": args.settle,
            "seed": args.seed,
            "rss": "VmRSS of /proc/<pid>/status",
        },
    )
    dataset = lab.dataset(args.orders)
    empty_db = await lab.database()
    # Side by side: RSS does not depend on the speed they start at.
    empty = dict(
        zip(
            (ROCKSDB, MEMORY),
            await asyncio.gather(
                *(empty_rss(lab, empty_db, store, args) for store in (ROCKSDB, MEMORY))
            ),
            strict=True,
        )
    )
    group = await lab.warm_group(dataset, args.partitions, args.batch_size)
    replayed = await group.restart(MEMORY, args.settle)

    worker = group.start(ROCKSDB)
    await group.verified_ready(worker)
    if await worker.sources(dataset.uids, connections=16) != {"cache"}:
        raise RuntimeError("not every order came from the RocksDB cache")
    await asyncio.sleep(args.settle)
    cached = {ROCKSDB: worker.rss(), MEMORY: replayed["rss_bytes"]}
    await lab.stop_worker(worker)

    for store in (ROCKSDB, MEMORY):
        report.results[store.removesuffix("://")] = {
            "rss_empty_bytes": empty[store],
            "rss_cached_bytes": cached[store],
            "bytes_per_cached_order": (cached[store] - empty[store]) / dataset.n,
        }
    report.results["body_bytes_mean"] = sum(map(len, dataset.bodies)) / dataset.n
    print_memory(report)
    return report


async def empty_rss(lab: Lab, pg_url: str, store: str, args: Namespace) -> int:
    """RSS of a worker with nothing to do: empty database, empty topic, empty cache."""
    worker = lab.start_worker(
        PG_URL=pg_url,
        KAFKA_TOPIC=await lab.topic(args.partitions),
        KAFKA_GROUP_ID=lab.name("group"),
        KAFKA_PARTITIONS=str(args.partitions),
        CACHE_STORE=store,
    )
    await worker.wait_ready()
    await asyncio.sleep(args.settle)
    rss = worker.rss()
    await lab.stop_worker(worker)
    return rss


def print_memory(report: Report) -> None:
    r: dict[str, Any] = report.results
    rows = [
        [
            store,
            r[store]["rss_empty_bytes"] / 2**20,
            r[store]["rss_cached_bytes"] / 2**20,
            r[store]["bytes_per_cached_order"],
        ]
        for store in ("rocksdb", "memory")
    ]
    show(
        f"memory: worker RSS, {report.parameters['orders']:,} cached orders",
        ["store", "empty MiB", "cached MiB", "bytes/order"],
        rows,
        [
            f"an order's JSON body is {r['body_bytes_mean']:.0f} bytes on average",
            "rocksdb cached: after one lookup of every order; "
            "memory cached: after the changelog replay",
        ],
    )
