"""Chart of the latest results as a PNG: lookup latency percentiles and throughput, ingest rates."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path
from typing import Any

from .report import Report, latest_result

PNG = "latest.png"
OURS = ("#1f4e99", "#3b7dd8", "#9cc3f0")  # p50, p90, p99
FLOOR = ("#555555", "#8a8a8a", "#c8c8c8")


def run(args: Namespace) -> Report:
    import matplotlib  # only this part needs it (the `bench` extra)

    matplotlib.use("Agg")
    from matplotlib import pyplot

    lookup_path, lookup = latest_result(args.results_dir, "lookup")
    ingest_path, ingest = latest_result(args.results_dir, "ingest")
    report = Report("chart", {"lookup": lookup_path.name, "ingest": ingest_path.name})

    figure = pyplot.figure(figsize=(14, 9), layout="constrained")
    grid = figure.add_gridspec(2, 2)
    latency_axes(figure.add_subplot(grid[0, :]), lookup)
    throughput_axes(figure.add_subplot(grid[1, 0]), lookup)
    ingest_axes(figure.add_subplot(grid[1, 1]), ingest)
    machine = lookup["machine"]
    figure.suptitle(
        f"orderstream {lookup['commit']} on {machine['cores']} cores, "
        f"{machine['memory_bytes'] / 2**30:.0f} GiB ({machine['cpu']}); "
        f"lookup {lookup_path.stem[:10]}, ingest {ingest_path.stem[:10]}",
        fontsize=10,
    )
    path = Path(args.results_dir) / PNG
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    report.results = {"png": path.name, "bytes": path.stat().st_size}
    print(f"\n== chart ==\nwrote {path}")
    return report


def cell_label(cell: dict[str, Any]) -> str:
    return f"{cell['kind']}\n{cell['connections']} conn"


def latency_axes(axes: Any, lookup: dict[str, Any]) -> None:
    cells = lookup["results"]["cells"]
    width = 0.13
    for index, cell in enumerate(cells):
        bars = (
            [("ours", OURS, -3), ("floor", FLOOR, 0)] if "floor" in cell else [("ours", OURS, -1.5)]
        )
        for who, colours, offset in bars:
            for rank, (name, colour) in enumerate(zip(("p50", "p90", "p99"), colours, strict=True)):
                axes.bar(
                    index + (offset + rank + 0.5) * width,
                    cell[who][f"{name}_ms"],
                    width,
                    color=colour,
                    label=f"{who} {name}" if index == 0 else None,
                )
    axes.set_xticks(range(len(cells)), [cell_label(c) for c in cells], fontsize=8)
    axes.set_yscale("log")
    axes.set_ylabel("latency, ms (log)")
    axes.set_title("GET /order/{id}: latency percentiles (floor: bare aiohttp from a dict)")
    axes.legend(ncols=6, fontsize=8)
    axes.grid(axis="y", alpha=0.3)


def throughput_axes(axes: Any, lookup: dict[str, Any]) -> None:
    cells = lookup["results"]["cells"]
    xs = range(len(cells))
    axes.bar(
        [x - 0.2 for x in xs],
        [c["ours"]["requests_per_s"] for c in cells],
        0.4,
        color=OURS[1],
        label="ours",
    )
    floors = [
        (x, c["floor"]["requests_per_s"]) for x, c in zip(xs, cells, strict=True) if "floor" in c
    ]
    axes.bar(
        [x + 0.2 for x, _ in floors],
        [rate for _, rate in floors],
        0.4,
        color=FLOOR[1],
        label="floor",
    )
    axes.set_xticks(list(xs), [cell_label(c) for c in cells], fontsize=7)
    axes.set_ylabel("requests/s")
    axes.set_title("GET /order/{id}: throughput")
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)


def ingest_axes(axes: Any, ingest: dict[str, Any]) -> None:
    r = ingest["results"]
    paths = [
        ("ours (stored + cached)", r["ours"]["orders_per_s"], OURS[1]),
        ("Kafka floor (consume + decode)", r["kafka_floor"]["orders_per_s"], FLOOR[1]),
        ("PostgreSQL floor (upsert_encoded)", r["pg_floor"]["orders_per_s"], FLOOR[1]),
        *(
            [("Faust (take + ack, nothing else)", r["faust_floor"]["orders_per_s"], FLOOR[0])]
            if "faust_floor" in r
            else []
        ),
        *(
            [
                (
                    "Faust + fastpath.py (take + ack)",
                    r["faust_floor_fast"]["orders_per_s"],
                    FLOOR[0],
                )
            ]
            if "faust_floor_fast" in r
            else []
        ),
        ("naive (1 tx/order)", r["naive"]["orders_per_s"], "#c0504d"),
    ]
    names, rates, colours = zip(*paths, strict=True)
    axes.barh(names, rates, color=colours)
    for y, rate in enumerate(rates):
        axes.text(rate, y, f" {rate:,.0f}", va="center", fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("orders/s")
    p = ingest["parameters"]
    axes.set_title(f"ingest: {p['orders']:,} orders, {p['partitions']} partitions")
    axes.margins(x=0.2)
