"""Restart: process start to /ready with N cached orders, per store, and the cold warm-up.

All on the run's warm group (bench/lab/warm.py): a consumer group on an empty orders topic, a
database holding N orders and a cache filled from it.
1. cold warm-up: the worker that filled the empty cache from PostgreSQL, until N were cached;
2. RocksDB: a worker of the group restarted on the warm-up's data directory;
3. memory: a worker of the group with the memory store, which replays the changelog.
"""

from __future__ import annotations

from argparse import Namespace

from ..lab import Lab
from ..lab.warm import SAMPLE
from ..report import Report, show


async def run(lab: Lab, args: Namespace) -> Report:
    report = Report(
        "restart",
        {
            "orders": args.orders,
            "partitions": args.partitions,
            "seed": args.seed,
            "verified_lookups": SAMPLE,
        },
    )
    group = await lab.warm_group(lab.dataset(args.orders), args.partitions, args.batch_size)
    report.results = {
        "cold_warm_up": group.cold,
        "rocksdb": await group.restart("rocksdb://", args.settle),
        "memory": await group.restart("memory://", args.settle),
    }
    print_restart(report)
    return report


def print_restart(report: Report) -> None:
    r, n = report.results, report.parameters["orders"]
    cold = r["cold_warm_up"]
    rows = [
        ["RocksDB store: restart", r["rocksdb"]["ready_s"], r["rocksdb"]["warm_up_sent"]],
        ["memory store: changelog replay", r["memory"]["ready_s"], r["memory"]["warm_up_sent"]],
        ["cold warm-up from PostgreSQL: /ready", cold["ready_s"], None],
        ["cold warm-up from PostgreSQL: all cached", cold["cached_s"], cold["warm_up_sent"]],
    ]
    show(
        f"restart: {n:,} cached orders",
        ["process start to", "seconds", "warm-up sent"],
        rows,
        [
            f"restarts verified by {SAMPLE} lookups answered from the cache",
            "warm-up sent: orders the worker's warm-up published to its cache (from its log; "
            "- = it did not run)",
        ],
    )
