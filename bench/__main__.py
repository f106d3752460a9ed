"""`python -m bench <part>... | all [flags]`: benchmarks on the PG_URL and KAFKA_BROKERS stack."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from orderstream.app import load_settings

from . import chart, readme
from .lab import Lab
from .parts import ingest, lookup, lookup_workers, memory, restart, soak, tracing
from .report import DEFAULT_RESULTS_DIR, Report

# In the order `all` runs them: ingest leaves a database of the N orders that the others reuse.
STACK_PARTS: dict[str, Callable[[Lab, argparse.Namespace], Awaitable[Report]]] = {
    "ingest": ingest.run,
    "lookup": lookup.run,
    "lookup-workers": lookup_workers.run_part,
    "restart": restart.run,
    "memory": memory.run,
    "soak": soak.run,
    "tracing": tracing.run,
}
PARTS = (*STACK_PARTS, "chart", "readme")
# Minutes long and measuring something else (memory over time; tracing's cost, four more
# workers): run by name, not by `all`.
NOT_IN_ALL = ("soak", "tracing", "lookup-workers")


def connection_counts(text: str) -> tuple[int, ...]:
    counts = tuple(int(part) for part in text.split(",") if part.strip())
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(
            "expected positive integers separated by commas, e.g. 1,16,64"
        )
    return counts


def positive(kind: type) -> Callable[[str], object]:
    def parse(text: str) -> object:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "parts",
        nargs="+",
        choices=[*PARTS, "all"],
        metavar="part",
        help=f"one or more of {', '.join(PARTS)}, or all (every part but soak and tracing)",
    )
    p.add_argument(
        "--orders",
        type=positive(int),
        default=100_000,
        help="orders generated, produced, stored and cached",
    )
    p.add_argument("--partitions", type=positive(int), default=4, help="KAFKA_PARTITIONS")
    p.add_argument(
        "--batch-size",
        type=positive(int),
        default=500,
        help="BATCH_SIZE of the worker and of the PostgreSQL floor",
    )
    p.add_argument(
        "--naive-sample",
        type=positive(int),
        default=5_000,
        help="ingest: orders the naive design stores (extrapolated to --orders)",
    )
    p.add_argument(
        "--duration",
        type=positive(float),
        default=5.0,
        help="lookup: seconds of load per cell (whole seconds with wrk)",
    )
    p.add_argument(
        "--connections",
        type=connection_counts,
        default=(1, 16, 64),
        help="lookup: concurrent connections, one cell each",
    )
    p.add_argument(
        "--workers",
        type=positive(int),
        default=1,
        help="lookup: with N > 1, cached ids on 1 worker and on N workers of one group, "
        "alternating, the connections split over their ports (bench/parts/lookup_workers.py)",
    )
    p.add_argument(
        "--rounds",
        type=positive(int),
        default=2,
        help="lookup --workers N: rounds of (1 worker, N workers) in one run",
    )
    p.add_argument(
        "--load-generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="lookup: wrk if installed (auto), or the Python aiohttp generator",
    )
    p.add_argument(
        "--max-requests",
        type=positive(int),
        default=200_000,
        help="lookup: most requests per cell of the Python generator",
    )
    p.add_argument(
        "--store",
        choices=("rocksdb://", "memory://"),
        default="rocksdb://",
        help="lookup: CACHE_STORE of the worker",
    )
    p.add_argument(
        "--settle", type=float, default=2.0, help="memory: seconds to wait before reading RSS"
    )
    p.add_argument(
        "--soak-duration",
        type=positive(float),
        default=240.0,
        help="soak: seconds of producing orders and looking them up",
    )
    p.add_argument(
        "--rate", type=positive(float), default=300.0, help="soak: orders produced per second"
    )
    p.add_argument(
        "--lookup-rate",
        type=positive(float),
        default=100.0,
        help="soak: lookups per second, of random orders produced so far",
    )
    p.add_argument(
        "--cache-size", type=positive(int), default=20_000, help="soak: CACHE_SIZE of the worker"
    )
    p.add_argument(
        "--sample-interval",
        type=positive(float),
        default=5.0,
        help="soak: seconds between readings of RSS, open files and disk",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the generated orders")
    p.add_argument(
        "--timeout",
        type=positive(float),
        default=900,
        help="longest wait for any one condition (ready, stored, cached)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="ingest, lookup: py-spy the worker, collapsed stacks beside the results",
    )
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR)
    p.add_argument(
        "--readme",
        type=Path,
        default=readme.README,
        help="readme: the file whose Performance figures block is rewritten",
    )
    return p


async def run(parts: Sequence[str], args: argparse.Namespace) -> list[Path]:
    saved = []
    run_id = datetime.now(UTC).isoformat(timespec="seconds")
    stack_parts = [part for part in STACK_PARTS if part in parts]  # in their order
    if stack_parts:
        async with Lab(load_settings(), seed=args.seed, timeout=args.timeout) as lab:
            postgresql = await lab.server_version()
            for part in stack_parts:
                report = await STACK_PARTS[part](lab, args)
                report.versions["postgresql"] = postgresql
                report.run = run_id
                saved.append(report.save(args.results_dir))
    if "chart" in parts:
        saved.append(chart.run(args).save(args.results_dir))
    if "readme" in parts:
        saved.append(readme.run(args).save(args.results_dir))
    return saved


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    parts = (
        (*(part for part in PARTS if part not in NOT_IN_ALL), *args.parts)
        if "all" in args.parts
        else tuple(args.parts)
    )
    for path in asyncio.run(run(parts, args)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
