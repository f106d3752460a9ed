"""`python -m bench readme`: README's figures, rendered from the latest results of one run.

README "Performance" holds a block between two markers that this module writes from
bench/results/; `make bench` (`all`) ends with it, so the tables, the chart and the results files
always come from the same run. Every figure of ours is shown beside a floor measured in that
run, as a ratio; the issue's targets are checked against those ratios.
"""

from __future__ import annotations

import re
from argparse import Namespace
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .report import REPO_ROOT, Report, latest_result

README = REPO_ROOT / "README.md"
BEGIN = "<!-- bench:begin (python -m bench readme writes this block; do not edit) -->"
END = "<!-- bench:end -->"
# The parts whose results the block shows; `lookup-workers` is shown when that run has it.
PARTS = ("ingest", "lookup", "restart", "memory")
OPTIONAL_PARTS = ("lookup-workers",)


class NotOneRun(RuntimeError):
    """The latest results of the parts come from different runs of the bench."""


def run(args: Namespace) -> Report:
    block = render(Path(args.results_dir))
    readme = Path(getattr(args, "readme", README))
    readme.write_text(replace_block(readme.read_text(), block))
    report = Report("readme", {"readme": readme.name})
    report.results = {"lines": block.count("\n") + 1}
    print(f"\n== readme ==\nwrote the figures of run {run_of(Path(args.results_dir))} to {readme}")
    return report


def latest_of_one_run(results_dir: Path) -> dict[str, dict[str, Any]]:
    """The latest result of each part, all of one run (the same `run`), or NotOneRun."""
    results = {part: latest_result(results_dir, part)[1] for part in PARTS}
    runs = {part: result.get("run") for part, result in results.items()}
    if None in runs.values() or len(set(runs.values())) != 1:
        raise NotOneRun(
            "the latest results are not of one run of `python -m bench all`: "
            + ", ".join(f"{part} {run}" for part, run in runs.items())
        )
    for part in OPTIONAL_PARTS:
        try:
            _, result = latest_result(results_dir, part)
        except FileNotFoundError:
            continue
        if result.get("run") == runs["ingest"]:
            results[part] = result
    return results


def run_of(results_dir: Path) -> str:
    return str(latest_of_one_run(results_dir)["ingest"]["run"])


def replace_block(text: str, block: str) -> str:
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"README has no block between {BEGIN!r} and {END!r}")
    return pattern.sub(lambda _: f"{BEGIN}\n{block}\n{END}", text, count=1)


def block_in(text: str) -> str:
    """The rendered block as README holds it (between the markers)."""
    start = text.index(BEGIN) + len(BEGIN) + 1
    return text[start : text.index(END) - 1]


def render(results_dir: Path) -> str:
    results = latest_of_one_run(results_dir)
    sections = [
        heading(results),
        ingest_table(results["ingest"]),
        lookup_table(results["lookup"]),
        *([workers_table(results["lookup-workers"])] if "lookup-workers" in results else []),
        restart_table(results["restart"], results["ingest"]),
        memory_table(results["memory"]),
        targets(results),
    ]
    return "\n\n".join(sections)


def number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(headers: Sequence[str], rows: Sequence[Sequence[str]], right: int = 1) -> str:
    """A Markdown table; the columns from ``right`` on are numbers, right-aligned."""
    align = ["---" if i < right else "---:" for i in range(len(headers))]
    lines = [headers, align, *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def heading(results: dict[str, dict[str, Any]]) -> str:
    ingest = results["ingest"]
    m = ingest["machine"]
    loads = [
        load
        for result in results.values()
        for load in (
            result["machine"]["load_average"][0],
            result["machine"]["load_average_at_end"][0],
        )
    ]
    minutes = sum(result["duration_s"] for result in results.values()) / 60
    versions = ingest["versions"]
    return (
        f"One run of `make bench` (`python -m bench all`), commit `{ingest['commit']}`, "
        f"{ingest['started_at'][:10]}: {m['cores']} cores ({m['cpu']}), "
        f"{m['memory_bytes'] / 2**30:.0f} GiB, load average {min(loads):.1f}-{max(loads):.1f} "
        f"during the run; the parts took {minutes:.1f} minutes. Python {versions['python']}, "
        f"faust-streaming {versions['faust-streaming']}, Kafka {versions['kafka']}, "
        f"PostgreSQL {versions.get('postgresql', '?')}."
    )


# (result key, label) of the ingest rows, in the order shown; a row a run lacks is left out.
INGEST_ROWS = (
    ("ours", "**ours**: worker `/ready` to all stored and cached"),
    ("kafka_floor", "Kafka floor: a bare aiokafka consumer, consume + decode"),
    ("faust_floor", "Faust floor, stock: an agent that takes and acks, nothing else"),
    ("faust_floor_fast", "Faust floor, fast path (`FAUST_FAST_PATH`): the same agent"),
    ("pg_floor", "PostgreSQL floor: the service's statement, 1 connection"),
    ("pg_floor_2", "PostgreSQL floor: the service's statement, 2 connections"),
    ("copy_versioned", "COPY with the service's rules, 1 connection"),
    ("copy_versioned_2", "COPY with the service's rules, 2 connections"),
    ("copy_floor", "COPY floor, 1 connection"),
    ("copy_floor_2", "COPY floor, 2 connections"),
    ("naive", "naive: a transaction per order, an `INSERT` per row"),
)


def ingest_table(ingest: dict[str, Any]) -> str:
    r = ingest["results"]
    ours = r["ours"]["orders_per_s"]
    rows = [
        [
            label,
            number(r[key]["orders_per_s"]),
            "1.00" if key == "ours" else ratio(ours / r[key]["orders_per_s"]),
        ]
        for key, label in INGEST_ROWS
        if key in r
    ]
    p = ingest["parameters"]
    return (
        f"**Ingest**, {p['orders']:,} orders, {p['partitions']} partitions, batches of "
        f"{p['batch_size']}:\n\n"
        + markdown(["path", "orders/s", "ours / this"], rows)
        + cpu_line(ingest)
    )


def cpu_line(ingest: dict[str, Any]) -> str:
    """What ours cost the machine per order, and the ceiling that puts on a machine this size."""
    cpu = ingest["results"]["ours"].get("cpu_us_per_order")
    if not cpu or cpu["postgres"] is None or cpu["kafka"] is None:
        return ""
    spent = cpu["worker"] + cpu["postgres"] + cpu["kafka"]
    cores = ingest["machine"]["cores"]
    ceiling = cores * 1e6 / spent
    busy = cpu["machine_busy"] / cpu["machine_available"]
    return (
        f"\n\nCPU per order while ours ran (from `/ready`): the worker {cpu['worker']:.0f} µs, "
        f"PostgreSQL {cpu['postgres']:.0f} µs, Kafka {cpu['kafka']:.0f} µs: {spent:.0f} µs, so "
        f"{cores} cores cap ingest at {ceiling:,.0f} orders/s even 100% busy (ours / that "
        f"ceiling: {ingest['results']['ours']['orders_per_s'] / ceiling:.2f}; the machine was "
        f"{busy:.0%} busy)."
    )


KIND_LABELS = {
    "cache": "cached ids",
    "nocache": "`?nocache=1`",
    "missing": "unknown ids (404)",
    "missing-nocache": "unknown ids, `?nocache=1`",
}


def lookup_table(lookup: dict[str, Any]) -> str:
    cells = lookup["results"]["cells"]
    floors = {
        (cell["kind"], cell["connections"]): cell["floor"] for cell in cells if "floor" in cell
    }
    rows = []
    for cell in cells:
        ours = cell["ours"]
        compared = {"nocache": "cache", "missing-nocache": "missing"}.get(
            cell["kind"], cell["kind"]
        )
        floor = floors.get((compared, cell["connections"]))
        rows.append(
            [
                KIND_LABELS.get(cell["kind"], cell["kind"]),
                str(cell["connections"]),
                number(ours["requests_per_s"]),
                number(ours["p50_ms"], 2),
                number(ours["p99_ms"], 2),
                number(floor["requests_per_s"]) if floor else "-",
                number(floor["p99_ms"], 2) if floor else "-",
                ratio(cell["ratio_to_floor"]),
            ]
        )
    p = lookup["parameters"]
    return (
        f"**Lookups**, {p['orders']:,} cached orders ({p['store']}), {p['duration_s']:g} s a cell; "
        "the floor is a bare aiohttp server answering the same bodies from a dict "
        "(`?nocache=1` cells are compared with its cell of the same ids):\n\n"
        + markdown(
            [
                "ids",
                "conns",
                "req/s",
                "p50 ms",
                "p99 ms",
                "floor req/s",
                "floor p99 ms",
                "ours / floor",
            ],
            rows,
            right=1,
        )
    )


def workers_table(workers: dict[str, Any]) -> str:
    r, p = workers["results"], workers["parameters"]
    rows = [
        [label, number(rate), ratio(r["median_ratio_to_1_worker"][label])]
        for label, rate in r["median_requests_per_s"].items()
    ]
    return (
        f"**Workers**, cached ids, {p['connections']} connections split over the workers' ports, "
        f"median of {p['rounds']} rounds of {p['duration_s']:g} s:\n\n"
        + markdown(["setup", "req/s", "/ 1 worker"], rows)
    )


def restart_table(restart: dict[str, Any], ingest: dict[str, Any]) -> str:
    r, n = restart["results"], restart["parameters"]["orders"]
    kafka = ingest["results"]["kafka_floor"]["orders_per_s"]
    replay = n / r["memory"]["ready_s"]
    cold = r["cold_warm_up"]
    rows = [
        ["RocksDB store: process start to `/ready`", number(r["rocksdb"]["ready_s"], 1), "-"],
        [
            "memory store (changelog replay): process start to `/ready`",
            number(r["memory"]["ready_s"], 1),
            f"{ratio(replay / kafka)} ({number(replay)} entries/s)",
        ],
        [
            "cold warm-up from PostgreSQL: to all cached",
            number(cold["cached_s"], 1),
            f"{ratio(cold['orders_per_s'] / kafka)} ({number(cold['orders_per_s'])} orders/s)",
        ],
    ]
    return f"**Restart**, {n:,} cached orders:\n\n" + markdown(
        ["", "seconds", "rate / Kafka floor"], rows
    )


def memory_table(memory: dict[str, Any]) -> str:
    r = memory["results"]
    body = r["body_bytes_mean"]
    rows = [
        [
            f"{store} store",
            number(r[store]["rss_empty_bytes"] / 2**20),
            number(r[store]["rss_cached_bytes"] / 2**20),
            number(r[store]["bytes_per_cached_order"]),
            ratio(r[store]["bytes_per_cached_order"] / body),
        ]
        for store in ("rocksdb", "memory")
    ]
    return (
        f"**Memory**, worker RSS, {memory['parameters']['orders']:,} cached orders; an order's "
        f"JSON body is {body:,.0f} bytes on average:\n\n"
        + markdown(["", "empty MiB", "cached MiB", "bytes an order", "/ body bytes"], rows)
    )


def cell(lookup: dict[str, Any], kind: str, connections: int) -> dict[str, Any] | None:
    return next(
        (
            c
            for c in lookup["results"]["cells"]
            if c["kind"] == kind and c["connections"] == connections
        ),
        None,
    )


Measure = Callable[[dict[str, dict[str, Any]]], tuple[float, bool] | None]
Check = tuple[str, Measure]


def ingest_target(results: dict[str, dict[str, Any]]) -> tuple[float, bool] | None:
    r = results["ingest"]["results"]
    faust = r.get("faust_floor_fast", r["faust_floor"])["orders_per_s"]
    pg = r.get("pg_floor_2", r["pg_floor"])["orders_per_s"]
    ours = r["ours"]["orders_per_s"]
    return ours / min(faust, pg), ours >= 6500 or ours >= 0.8 * min(faust, pg)


def faust_target(results: dict[str, dict[str, Any]]) -> tuple[float, bool] | None:
    r = results["ingest"]["results"]
    if "faust_floor_fast" not in r:
        return None
    gain = r["faust_floor_fast"]["orders_per_s"] / r["faust_floor"]["orders_per_s"]
    return gain, gain >= 2.5


def lookup_target(kind: str, least: float, p99_ms: float | None = None) -> Measure:
    def check(results: dict[str, dict[str, Any]]) -> tuple[float, bool] | None:
        found = cell(results["lookup"], kind, 64)
        if found is None:
            return None
        ok = found["ratio_to_floor"] >= least
        if p99_ms is not None:
            ok = ok and found["ours"]["p99_ms"] < p99_ms
        return found["ratio_to_floor"], ok

    return check


def workers_target(results: dict[str, dict[str, Any]]) -> tuple[float, bool] | None:
    if "lookup-workers" not in results:
        return None
    ratios = results["lookup-workers"]["results"]["median_ratio_to_1_worker"]
    two = next(value for label, value in ratios.items() if label.endswith("workers"))
    return two, two >= 1.0


TARGETS: tuple[Check, ...] = (
    ("Faust floor, fast path / stock ≥ 2.5", faust_target),
    ("ingest ≥ 6,500 orders/s or ≥ 0.8 of the slower raised floor (ours / it)", ingest_target),
    (
        "cached ids at 64 connections ≥ 0.8 of the floor, p99 < 10 ms",
        lookup_target("cache", 0.8, 10),
    ),
    ("`?nocache=1` at 64 connections ≥ 0.4 of the floor", lookup_target("nocache", 0.4)),
    ("unknown ids at 64 connections ≥ 0.6 of the floor", lookup_target("missing", 0.6)),
    ("N workers ≥ 1.0 × one worker (lookups)", workers_target),
)


def targets(results: dict[str, dict[str, Any]]) -> str:
    rows = []
    for label, check in TARGETS:
        outcome = check(results)
        if outcome is not None:
            value, met = outcome
            rows.append([label, ratio(value), "met" if met else "**not met**"])
    return "**Targets** (issue 15), from the figures above:\n\n" + markdown(
        ["target", "measured", ""], rows
    )
