"""Lookup with `--workers N`: cached-id lookups on 1 worker and on N workers of one group.

Three setups alternate for `--rounds` rounds in one run, so a slow spell of a shared machine
falls on each: 1 worker; N workers (standby reads, the default); N workers with
STANDBY_READ_MAX_LAG=off (every lookup of another's partition forwarded over HTTP). The load is
split over the workers' ports (connections / N each, one wrk per port, at once) and the figures
summed. Each cell starts its workers afresh (the first on the warm group's files, the others on
files of their own, recovered from the changelog in the first cell that starts them) and waits
until each answers a sample from a cache (with standby reads, from its own cache or standby copy,
served by itself): the cell measures the steady state.
"""

from __future__ import annotations

import asyncio
import statistics
from argparse import Namespace
from collections.abc import Sequence
from typing import Any

from harness import eventually

from ..lab import Lab
from ..lab.load import Load, find_wrk, run_python, run_wrk, wrk_version
from ..lab.worker import BenchWorker
from ..report import Report, show
from .lookup import write_inputs

SAMPLE = 200  # lookups each worker must answer itself before a cell


async def run_part(lab: Lab, args: Namespace) -> Report:
    """The `lookup-workers` part of `all`: 1 worker against `--workers` (at least 2)."""
    return await run(lab, Namespace(**{**vars(args), "workers": max(2, args.workers)}))


async def run(lab: Lab, args: Namespace) -> Report:
    wrk = find_wrk() if args.load_generator in ("auto", "wrk") else None
    if args.load_generator == "wrk" and wrk is None:
        raise RuntimeError("--load-generator wrk: wrk is not installed (apt-get install wrk)")
    connections = max(args.connections)
    report = Report(
        "lookup-workers",
        {
            "orders": args.orders,
            "partitions": args.partitions,
            "workers": args.workers,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "connections": connections,
            "seed": args.seed,
            "load_generator": "wrk -t1 per worker (Lua: random id per request)"
            if wrk
            else f"python aiohttp (bounded to {args.max_requests:,} requests a cell)",
        },
    )
    if wrk:
        report.versions["wrk"] = wrk_version(wrk)
    dataset = lab.dataset(args.orders)
    group = await lab.warm_group(dataset, args.partitions, args.batch_size)
    files = write_inputs(lab.path("lookup"), dataset.uids, dataset.bodies)
    sample = dataset.uids[:SAMPLE]

    async def load(urls: Sequence[str]) -> dict[str, Any]:
        each = max(1, connections // len(urls))
        if wrk:
            loads = await asyncio.gather(
                *(run_wrk(wrk, url, files["cached"], "", each, args.duration) for url in urls)
            )
        else:
            loads = await asyncio.gather(
                *(
                    run_python(url, dataset.uids, "", each, args.duration, args.max_requests)
                    for url in urls
                )
            )
        return combined(loads)

    # (label, workers, settings): N workers answering from their standby copies, and N
    # workers forwarding every lookup of another's partition (the design before standby reads).
    setups = [
        ("1 worker", 1, {}),
        (f"{args.workers} workers", args.workers, {}),
        (f"{args.workers} workers, forwarding", args.workers, {"STANDBY_READ_MAX_LAG": "off"}),
    ]
    # The other workers' data dirs, kept from cell to cell: only the first cell that starts
    # them recovers their partitions from the changelog; later ones restart on the files.
    extra_dirs = [str(lab.path("data")) for _ in range(args.workers - 1)]
    cells = []
    for round_ in range(args.rounds):
        for label, n, settings in setups:
            first = lab.start_worker(**{**group.settings, **settings})  # the warm files
            # The others get data dirs of their own: their partitions come from the changelog.
            extra = [
                lab.start_worker(**{**group.settings, **settings, "DATA_DIR": data_dir})
                for data_dir in extra_dirs[: n - 1]
            ]
            workers = [first, *extra]
            try:
                settled_s = await settled(lab, workers, sample, args.timeout, standby=not settings)
                cells.append(
                    {
                        "round": round_,
                        "setup": label,
                        "workers": n,
                        "settled_s": settled_s,
                        **await load([w.url for w in workers]),
                    }
                )
            finally:
                for worker in workers:
                    await lab.stop_worker(worker)
    medians = {
        label: statistics.median(c["requests_per_s"] for c in cells if c["setup"] == label)
        for label, _, _ in setups
    }
    one = medians[setups[0][0]]
    report.results = {
        "cells": cells,
        "median_requests_per_s": medians,
        "median_ratio_to_1_worker": {label: m / one for label, m in medians.items()},
    }
    print_workers(report)
    return report


def combined(loads: Sequence[Load]) -> dict[str, Any]:
    """The cell's figures over every port: requests summed, the worst latencies."""
    return {
        "requests_per_s": sum(load.requests_per_s for load in loads),
        "p50_ms": max(load.p50_ms for load in loads),
        "p99_ms": max(load.p99_ms for load in loads),
        "non_2xx": sum(load.non_2xx for load in loads),
        "socket_errors": sum(load.socket_errors for load in loads),
        "per_port": [load.as_dict() for load in loads],
    }


async def settled(
    lab: Lab, workers: Sequence[BenchWorker], uids: Sequence[str], timeout: float, standby: bool
) -> float:
    """Seconds until every worker answers every id of ``uids`` from a cache: its own or its
    standby copy (``standby``), or the owner's through a forward."""
    started = asyncio.get_running_loop().time()

    async def answers(worker: BenchWorker) -> bool:
        for uid in uids:
            async with lab.http.get(f"{worker.url}/order/{uid}") as reply:
                await reply.read()
                source = reply.headers.get("X-Source")
                if reply.status != 200 or source not in ("cache", "cache-standby"):
                    return False
                if standby and reply.headers.get("X-Served-By") != worker.url:
                    return False
        return True

    async def all_settled() -> bool:
        for worker in workers:
            await worker.wait_ready()
        return all(await asyncio.gather(*(answers(w) for w in workers)))

    await eventually(all_settled, timeout=timeout, interval=0.5, what="every worker settled")
    return asyncio.get_running_loop().time() - started


def print_workers(report: Report) -> None:
    p = report.parameters
    ratios = report.results["median_ratio_to_1_worker"]
    show(
        f"lookup, 1 vs {p['workers']} workers: {p['orders']:,} cached orders, "
        f"{p['connections']} connections split over the ports, {p['duration_s']:g} s a cell, "
        f"{p['load_generator']}",
        ["round", "setup", "req/s", "p50 ms", "p99 ms", "non-2xx", "settled s"],
        [
            [
                c["round"],
                c["setup"],
                c["requests_per_s"],
                c["p50_ms"],
                c["p99_ms"],
                c["non_2xx"],
                c["settled_s"],
            ]
            for c in report.results["cells"]
        ],
        [f"median {label} / 1 worker: {ratio:.2f}" for label, ratio in ratios.items()],
    )
