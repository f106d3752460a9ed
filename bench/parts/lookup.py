"""Lookup: HTTP load on a worker with N cached orders, beside a bare aiohttp server (the floor).

Cells: cached ids, the same ids with `?nocache=1` (PostgreSQL), unknown ids (404: new ones, each
looked up once just before the cell, so answered from the negative cache as a repeated unknown id
is within NEGATIVE_CACHE_TTL), unknown ids with `?nocache=1` (every miss read from PostgreSQL, as
a new unknown id is), each at every connection count, for a fixed time. The floor answers the same
bodies from a dict; a `?nocache=1` cell is compared with the floor's cell of the same ids, since
the floor has only one way to answer.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from argparse import Namespace
from collections.abc import Awaitable
from datetime import date
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp

from harness import eventually, free_port

from ..lab import Lab
from ..lab.flamegraph import Profile
from ..lab.load import Load, find_wrk, run_python, run_wrk, wrk_version
from ..lab.worker import BenchWorker
from ..report import REPO_ROOT, Report, show

# kind -> (ids, query, the floor cell it is compared with)
KINDS = {
    "cache": ("cached", "", "cache"),
    "nocache": ("cached", "?nocache=1", "cache"),
    "missing": ("missing", "", "missing"),
    # Every miss read from PostgreSQL (?nocache=1 bypasses the negative cache): the
    # unknown-id figure without the negative cache, measured in the same run.
    "missing-nocache": ("missing", "?nocache=1", "missing"),
}
MISSING_IDS = 10_000


async def run(lab: Lab, args: Namespace) -> Report:
    if args.workers > 1:  # 1 worker vs N workers, cached ids only
        from . import lookup_workers

        return await lookup_workers.run(lab, args)
    wrk = find_wrk() if args.load_generator in ("auto", "wrk") else None
    if args.load_generator == "wrk" and wrk is None:
        raise RuntimeError("--load-generator wrk: wrk is not installed (apt-get install wrk)")
    report = Report(
        "lookup",
        {
            "orders": args.orders,
            "partitions": args.partitions,
            "store": args.store,
            "duration_s": args.duration,
            "connections": list(args.connections),
            "seed": args.seed,
            "load_generator": "wrk -t1 (Lua: random id per request)"
            if wrk
            else f"python aiohttp (bounded to {args.max_requests:,} requests a cell)",
        },
    )
    if wrk:
        report.versions["wrk"] = wrk_version(wrk)
    dataset = lab.dataset(args.orders)
    group = await lab.warm_group(dataset, args.partitions, args.batch_size)
    worker = group.start(args.store)  # a restart with the cache full
    ready_s = await group.verified_ready(worker)

    files = write_inputs(lab.path("lookup"), dataset.uids, dataset.bodies)
    ids = {"cached": dataset.uids, "missing": files["missing_ids"]}

    async def load(base_url: str, kind: str, connections: int) -> Load:
        id_kind, query, _ = KINDS[kind]
        if wrk:
            return await run_wrk(wrk, base_url, files[id_kind], query, connections, args.duration)
        return await run_python(
            base_url, ids[id_kind], query, connections, args.duration, args.max_requests
        )

    floor_process, floor_url = start_floor(files["bodies"])
    cells = []
    try:
        await wait_floor(lab, floor_url)
        for kind in KINDS:
            for connections in args.connections:
                profile = (
                    args.results_dir / f"{date.today()}-lookup-{kind}-profile.txt"
                    if args.profile and kind != "missing" and connections == max(args.connections)
                    else None
                )
                if kind == "missing":  # new ids, each missed once just before: repeats
                    ids["missing"] = new_missing_ids(files["missing"])
                    await miss_once(lab, worker.url, ids["missing"])
                cell = {
                    "kind": kind,
                    "connections": connections,
                    **await measure_ours(worker, load(worker.url, kind, connections), profile),
                }
                if KINDS[kind][2] == kind:
                    cell["floor"] = (await load(floor_url, kind, connections)).as_dict()
                cells.append(cell)
    finally:
        floor_process.terminate()
        floor_process.wait(10)
    for cell in cells:
        floor = next(
            c["floor"]
            for c in cells
            if c["kind"] == KINDS[cell["kind"]][2] and c["connections"] == cell["connections"]
        )
        cell["ratio_to_floor"] = cell["ours"]["requests_per_s"] / floor["requests_per_s"]
        if cell["kind"] == "cache" and cell["cache_misses"]:
            report.notes.append(
                f"{cell['cache_misses']} cache misses in the cache cell at "
                f"{cell['connections']} connections"
            )
    report.results = {
        "worker": {"restart_ready_s": ready_s, "rss_bytes_after": worker.rss()},
        "cells": cells,
    }
    await lab.stop_worker(worker)
    print_lookup(report)
    return report


async def measure_ours(
    worker: BenchWorker, load: Awaitable[Load], profile: Path | None
) -> dict[str, Any]:
    """One cell on the worker, with the cache hits and misses it counted meanwhile."""
    before = await worker.metrics()
    profiler = Profile(worker.pid, profile).start() if profile else None
    result = await load
    extra: dict[str, Any] = {"profile": profiler.stop()} if profiler else {}
    after = await worker.metrics()

    def delta(name: str) -> int:
        return int(after.get(name, 0) - before.get(name, 0))

    return {
        "ours": result.as_dict(),
        "cache_hits": delta("orderstream_cache_hits_total"),
        "cache_misses": delta("orderstream_cache_misses_total"),
        "negative_cache_hits": delta("orderstream_negative_cache_hits_total"),
        **extra,
    }


def new_missing_ids(path: Path) -> list[str]:
    """Ids no order has, written to ``path`` for wrk (new ones: not remembered yet)."""
    missing = [f"{uuid4().hex}miss" for _ in range(MISSING_IDS)]
    path.write_text("\n".join(missing) + "\n")
    return missing


async def miss_once(lab: Lab, base_url: str, uids: list[str], concurrency: int = 32) -> None:
    """Look every id up once, so the worker's negative cache knows them (NEGATIVE_CACHE_TTL)."""
    queue = iter(uids)

    async def client() -> None:
        for uid in queue:
            async with lab.http.get(f"{base_url}/order/{uid}") as reply:
                await reply.read()

    await asyncio.gather(*(client() for _ in range(concurrency)))


def write_inputs(directory: Path, uids: list[str], bodies: list[bytes]) -> dict[str, Any]:
    """Id files for wrk and the floor's bodies (`uid<TAB>body` lines)."""
    directory.mkdir(parents=True)
    files: dict[str, Any] = {
        "cached": directory / "cached.txt",
        "missing": directory / "missing.txt",
        "bodies": directory / "bodies.tsv",
    }
    files["missing_ids"] = new_missing_ids(files["missing"])
    files["cached"].write_text("\n".join(uids) + "\n")
    files["bodies"].write_bytes(
        b"".join(
            uid.encode() + b"\t" + body + b"\n" for uid, body in zip(uids, bodies, strict=True)
        )
    )
    return files


def start_floor(bodies: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.lab.floor_server",
            "--port",
            str(port),
            "--bodies",
            str(bodies),
        ],
        cwd=REPO_ROOT,
    )
    return process, f"http://127.0.0.1:{port}"


async def wait_floor(lab: Lab, url: str) -> None:
    async def answers() -> bool:
        try:
            async with lab.http.get(f"{url}/order/probe") as reply:
                return reply.status == 404
        except aiohttp.ClientError:
            return False

    await eventually(answers, timeout=60, interval=0.1, what="the floor server answering")


def print_lookup(report: Report) -> None:
    rows = []
    for cell in report.results["cells"]:
        for who in ("ours", "floor"):
            if who in cell:
                load = cell[who]
                rows.append(
                    [
                        cell["kind"],
                        cell["connections"],
                        who,
                        load["requests_per_s"],
                        load["p50_ms"],
                        load["p90_ms"],
                        load["p99_ms"],
                        load["non_2xx"],
                        load["socket_errors"],
                        round(cell["ratio_to_floor"], 2) if who == "ours" else None,
                    ]
                )
    p = report.parameters
    show(
        f"lookup: {p['orders']:,} cached orders ({p['store']}), {p['duration_s']:g} s a cell, "
        f"{p['load_generator']}",
        [
            "ids",
            "conns",
            "server",
            "req/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "non-2xx",
            "errors",
            "ours/floor",
        ],
        rows,
        [
            *report.notes,
            "nocache is compared with the floor's cached cell: "
            "the floor answers every id from its dict",
            "missing: each id looked up once just before the cell (a repeat: negative cache); "
            "missing-nocache: every miss read from PostgreSQL, compared with the floor's missing",
            f"worker restarted with its cache full: /ready after "
            f"{report.results['worker']['restart_ready_s']:.1f} s",
        ],
    )
