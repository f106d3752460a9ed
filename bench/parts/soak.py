"""Soak: minutes of a fixed produce rate and lookups; the worker's memory, files and disk over time.

A worker starts on an empty database and topic with CACHE_SIZE ``--cache-size``; orders are
produced at ``--rate`` per second for ``--soak-duration`` seconds while ``--lookup-rate`` lookups
per second ask for random orders produced so far (recent ones cached, older ones evicted and
read from PostgreSQL). Every ``--sample-interval`` seconds it records the worker's RSS (VmRSS),
its open files (/proc/<pid>/fd), the size of its data directory (RocksDB's write-ahead log and
table files apart), the orders cached and stored. Once the cache holds CACHE_SIZE orders its
memory and disk should stay flat: the result gives the slopes after that point, and the part
draws `<date>-soak.png` beside its JSON.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from argparse import Namespace
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer

from orderstream.order.generator import random_orders
from orderstream.order.records import encode_order

from ..lab import Lab
from ..lab.worker import BenchWorker
from ..report import Report, show

TICK = 0.1  # the producer and the lookups run in steps of this many seconds
# Samples this long after the cache bound is reached are "after the bound" (the memtables and
# block cache fill up with the first evictions).
SETTLE_AFTER_BOUND = 30.0


@dataclass(frozen=True)
class Sample:
    t_s: float
    produced: int
    stored: float
    cached: float
    rss_bytes: int
    open_files: int
    data_bytes: int
    wal_bytes: int
    sst_bytes: int
    lookups: int


def dir_sizes(root: Path) -> tuple[int, int, int]:
    """Bytes under ``root``: all, RocksDB write-ahead logs (*.log), table files (*.sst)."""
    total = wal = sst = 0
    for directory, _, files in os.walk(root):
        for name in files:
            try:
                size = os.stat(os.path.join(directory, name)).st_size
            except FileNotFoundError:  # RocksDB deleted it meanwhile
                continue
            total += size
            if name.endswith(".log") and name[:-4].isdigit():
                wal += size
            elif name.endswith(".sst"):
                sst += size
    return total, wal, sst


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def slope_per_minute(samples: Sequence[Sample], field: str) -> float | None:
    """Least-squares slope of ``field`` over time, per minute; None with fewer than 3 samples."""
    if len(samples) < 3:
        return None
    xs = [s.t_s for s in samples]
    ys = [float(getattr(s, field)) for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else None


class Soak:
    """The producer, the lookups and the sampler of one soak run."""

    def __init__(
        self, lab: Lab, worker: BenchWorker, topic: str, data_dir: Path, args: Namespace
    ) -> None:
        self.lab, self.worker, self.topic, self.data_dir, self.args = (
            lab,
            worker,
            topic,
            data_dir,
            args,
        )
        self.uids: list[str] = []
        self.lookups = 0
        self.sources: dict[str, int] = {}
        self.samples: list[Sample] = []
        self.started = 0.0

    async def run(self) -> None:
        self.started = time.monotonic()
        producing = asyncio.create_task(self.produce())
        looking = asyncio.create_task(self.look_up())
        sampling = asyncio.create_task(self.sample())
        try:
            await producing
        finally:
            looking.cancel()
            sampling.cancel()
            await asyncio.gather(looking, sampling, return_exceptions=True)
        await self.take_sample()  # the last one, once everything is produced

    async def produce(self) -> None:
        """``--rate`` orders a second, in steps of TICK, for ``--soak-duration`` seconds."""
        total = round(self.args.rate * self.args.soak_duration)
        orders = random_orders(self.args.seed, total)
        producer = AIOKafkaProducer(bootstrap_servers=self.lab.brokers, acks="all", linger_ms=5)
        await producer.start()
        try:
            while len(self.uids) < total:
                due = min(total, round((time.monotonic() - self.started) * self.args.rate))
                futures = []
                while len(self.uids) < due:
                    order = next(orders)
                    futures.append(
                        await producer.send(
                            self.topic, encode_order(order), key=order.order_uid.encode()
                        )
                    )
                    self.uids.append(order.order_uid)
                await asyncio.gather(*futures)
                await asyncio.sleep(TICK)
        finally:
            await producer.stop()

    async def look_up(self) -> None:
        """``--lookup-rate`` lookups a second of random orders produced so far."""
        rng = random.Random(self.args.seed)
        while True:
            due = round((time.monotonic() - self.started) * self.args.lookup_rate)
            while self.lookups < due and self.uids:
                uid = self.uids[rng.randrange(len(self.uids))]
                try:
                    async with self.lab.http.get(f"{self.worker.url}/order/{uid}") as reply:
                        await reply.read()
                        source = (
                            reply.headers.get("X-Source", "none")
                            if reply.status == 200
                            else str(reply.status)
                        )
                except aiohttp.ClientError as exc:
                    source = type(exc).__name__
                self.sources[source] = self.sources.get(source, 0) + 1
                self.lookups += 1
            await asyncio.sleep(TICK)

    async def sample(self) -> None:
        while True:
            await self.take_sample()
            await asyncio.sleep(self.args.sample_interval)

    async def take_sample(self) -> None:
        process = self.worker.process
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"the worker exited with {process.returncode} during the soak:\n"
                f"{self.worker.log_tail()}"
            )
        metrics = await self.worker.metrics()
        total, wal, sst = dir_sizes(self.data_dir)
        self.samples.append(
            Sample(
                t_s=round(time.monotonic() - self.started, 2),
                produced=len(self.uids),
                stored=metrics.get("orderstream_orders_stored_total", 0.0),
                cached=metrics.get("orderstream_cache_size", 0.0),
                rss_bytes=self.worker.rss(),
                open_files=open_files(self.worker.pid),
                data_bytes=total,
                wal_bytes=wal,
                sst_bytes=sst,
                lookups=self.lookups,
            )
        )


async def run(lab: Lab, args: Namespace) -> Report:
    partitions = args.partitions
    bound = (args.cache_size // partitions) * partitions  # the per-partition bound, in all
    report = Report(
        "soak",
        {
            "duration_s": args.soak_duration,
            "rate_per_s": args.rate,
            "lookup_rate_per_s": args.lookup_rate,
            "cache_size": args.cache_size,
            "partitions": partitions,
            "sample_interval_s": args.sample_interval,
            "seed": args.seed,
            "rocksdb": {
                name: os.environ.get(name, "default")
                for name in (
                    "ROCKSDB_WRITE_BUFFER_MB",
                    "ROCKSDB_BLOCK_CACHE_MB",
                    "ROCKSDB_MAX_WAL_MB",
                )
            },
            "rss": "VmRSS of /proc/<pid>/status",
        },
    )
    data_dir = lab.path("data")
    rocksdb = {name: value for name, value in os.environ.items() if name.startswith("ROCKSDB_")}
    worker = lab.start_worker(
        PG_URL=await lab.database(),
        KAFKA_TOPIC=(topic := await lab.topic(partitions)),
        KAFKA_GROUP_ID=lab.name("group"),
        KAFKA_PARTITIONS=str(partitions),
        CACHE_SIZE=str(args.cache_size),
        BATCH_SIZE=str(args.batch_size),
        DATA_DIR=str(data_dir),
        **rocksdb,
    )
    await worker.wait_ready()
    soak = Soak(lab, worker, topic, data_dir, args)
    await soak.run()
    await lab.stop_worker(worker)

    samples = soak.samples
    reached = next((s.t_s for s in samples if s.cached >= bound), None)
    after = (
        [s for s in samples if s.t_s >= reached + SETTLE_AFTER_BOUND] if reached is not None else []
    )
    last = samples[-1]
    report.results = {
        "cache_bound": bound,
        "bound_reached_s": reached,
        "produced": last.produced,
        "stored": last.stored,
        "lookups": last.lookups,
        "lookup_sources": soak.sources,
        "rss_start_bytes": samples[0].rss_bytes,
        "rss_end_bytes": last.rss_bytes,
        "rss_max_bytes": max(s.rss_bytes for s in samples),
        "rss_at_bound_bytes": after[0].rss_bytes if after else None,
        "rss_slope_after_bound_bytes_per_min": slope_per_minute(after, "rss_bytes"),
        "data_end_bytes": last.data_bytes,
        "data_max_bytes": max(s.data_bytes for s in samples),
        "wal_max_bytes": max(s.wal_bytes for s in samples),
        "data_slope_after_bound_bytes_per_min": slope_per_minute(after, "data_bytes"),
        "open_files_max": max(s.open_files for s in samples),
        "open_files_end": last.open_files,
        "samples": [asdict(s) for s in samples],
    }
    report.results["png"] = draw(report, args.results_dir)
    print_soak(report)
    return report


def draw(report: Report, results_dir: Path) -> str | None:
    """RSS, data directory and open files over time, as `<date>-soak.png` beside the JSON."""
    try:
        import matplotlib  # the `bench` extra; without it the JSON still has every sample
    except ImportError:
        return None
    matplotlib.use("Agg")
    from matplotlib import pyplot

    r: dict[str, Any] = report.results
    samples = r["samples"]
    minutes = [s["t_s"] / 60 for s in samples]
    figure, (memory, disk, files) = pyplot.subplots(
        3, 1, figsize=(10, 9), sharex=True, layout="constrained"
    )
    memory.plot(
        minutes, [s["rss_bytes"] / 2**20 for s in samples], color="#1f4e99", label="worker RSS"
    )
    memory.set_ylabel("MiB")
    cached = memory.twinx()
    cached.plot(
        minutes,
        [s["cached"] for s in samples],
        color="#8a8a8a",
        linestyle=":",
        label="orders cached",
    )
    cached.set_ylabel("orders cached")
    disk.plot(
        minutes, [s["data_bytes"] / 2**20 for s in samples], color="#1f4e99", label="data dir"
    )
    disk.plot(
        minutes,
        [s["wal_bytes"] / 2**20 for s in samples],
        color="#c0504d",
        label="of which WAL (*.log)",
    )
    disk.plot(
        minutes,
        [s["sst_bytes"] / 2**20 for s in samples],
        color="#3b7dd8",
        linestyle="--",
        label="of which tables (*.sst)",
    )
    disk.set_ylabel("MiB")
    files.plot(minutes, [s["open_files"] for s in samples], color="#1f4e99", label="open files")
    files.set_ylabel("open files")
    files.set_xlabel("minutes")
    for axes in (memory, disk, files):
        if r["bound_reached_s"] is not None:
            axes.axvline(
                r["bound_reached_s"] / 60,
                color="#555555",
                linewidth=0.8,
                label="cache bound reached" if axes is memory else None,
            )
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", fontsize=8)
    cached.legend(loc="lower right", fontsize=8)
    memory.set_ylim(bottom=0)
    disk.set_ylim(bottom=0)
    files.set_ylim(bottom=0)
    p = report.parameters
    figure.suptitle(
        f"soak: {p['rate_per_s']} orders/s + {p['lookup_rate_per_s']} lookups/s, "
        f"CACHE_SIZE={p['cache_size']:,}, {p['partitions']} partitions",
        fontsize=10,
    )
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{report.started_at.date().isoformat()}-soak.png"
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path.name


def print_soak(report: Report) -> None:
    r: dict[str, Any] = report.results
    mib = 2**20

    def per_min(value: float | None) -> float | None:
        return None if value is None else value / mib

    rows = [
        [
            "RSS MiB",
            r["rss_start_bytes"] / mib,
            None if r["rss_at_bound_bytes"] is None else r["rss_at_bound_bytes"] / mib,
            r["rss_end_bytes"] / mib,
            r["rss_max_bytes"] / mib,
            per_min(r["rss_slope_after_bound_bytes_per_min"]),
        ],
        [
            "data dir MiB",
            r["samples"][0]["data_bytes"] / mib,
            None,
            r["data_end_bytes"] / mib,
            r["data_max_bytes"] / mib,
            per_min(r["data_slope_after_bound_bytes_per_min"]),
        ],
        [
            "open files",
            r["samples"][0]["open_files"],
            None,
            r["open_files_end"],
            r["open_files_max"],
            None,
        ],
    ]
    reached = r["bound_reached_s"]
    show(
        f"soak: {report.parameters['duration_s']:.0f} s at {report.parameters['rate_per_s']} "
        f"orders/s, CACHE_SIZE={report.parameters['cache_size']:,}",
        ["", "start", "bound+30s", "end", "max", "slope after bound /min"],
        rows,
        [
            f"cache bound {r['cache_bound']:,} reached after "
            + (f"{reached:.0f} s" if reached is not None else "- (never)"),
            f"{r['produced']:,} produced, {r['stored']:,.0f} stored, {r['lookups']:,} lookups "
            f"({', '.join(f'{k}: {v:,}' for k, v in sorted(r['lookup_sources'].items()))})",
            f"WAL at most {r['wal_max_bytes'] / mib:.1f} MiB; chart: {r['png']}",
        ],
    )
