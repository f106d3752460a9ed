"""Smoke test of the benchmark harness (bench/): every part runs at a tiny size and records
complete results, so the harness cannot rot. It asserts nothing about speed: figures come from
`make bench` (README, Performance)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from bench import readme as bench_readme
from harness import REPO_ROOT

ORDERS = 200
STACK_PARTS = ("ingest", "lookup", "restart", "memory")
PARTS = (*STACK_PARTS, "chart", "readme")
KINDS = ("cache", "nocache", "missing", "missing-nocache")
LOAD_KEYS = ("requests", "seconds", "requests_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms")


def assert_positive(where: str, values: dict[str, Any], *keys: str) -> None:
    for key in keys:
        value = values.get(key)
        assert isinstance(value, (int, float)) and value > 0, f"{where}.{key} = {value!r}"


async def run_bench(tmp_path: Path, pg_server: str, kafka_brokers: str) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "bench",
        "all",
        "--orders",
        str(ORDERS),
        "--naive-sample",
        "50",
        "--duration",
        "1",
        "--connections",
        "1",
        "--settle",
        "0.2",
        "--timeout",
        "60",
        "--results-dir",
        str(tmp_path),
        "--readme",
        str(readme_copy(tmp_path)),
    ]
    env = {**os.environ, "PG_URL": pg_server, "KAFKA_BROKERS": kafka_brokers}
    done = await asyncio.to_thread(
        subprocess.run, command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    results = {}
    for part in PARTS:
        found = list(tmp_path.glob(f"????-??-??-{part}.json"))
        assert len(found) == 1, f"no single {part} result in {sorted(tmp_path.iterdir())}"
        results[part] = orjson.loads(found[0].read_bytes())
    return results


def readme_copy(tmp_path: Path) -> Path:
    """README.md's copy, for `readme` to rewrite: a bench test leaves the real one alone."""
    copy = tmp_path / "README.md"
    copy.write_text((REPO_ROOT / "README.md").read_text())
    return copy


async def test_every_part_runs_and_records_complete_results(
    tmp_path: Path, pg_server: str, kafka_brokers: str
) -> None:
    results = await run_bench(tmp_path, pg_server, kafka_brokers)

    for part, record in results.items():
        assert record["part"] == part
        assert {
            "started_at",
            "duration_s",
            "commit",
            "machine",
            "versions",
            "parameters",
            "results",
        } <= record.keys()
        assert_positive(f"{part}.machine", record["machine"], "cores", "memory_bytes")
        for name in ("python", "faust-streaming", "aiokafka", "asyncpg", "kafka"):
            assert record["versions"][name], f"{part}: no {name} version"
        if part not in ("chart", "readme"):
            assert record["parameters"]["orders"] == ORDERS
    for part in ("ingest", "lookup", "restart", "memory"):
        assert results[part]["versions"]["postgresql"]

    ingest = results["ingest"]["results"]
    # With 200 orders the worker may be done before /ready is first seen: no rate from /ready.
    assert_positive(
        "ingest.ours",
        ingest["ours"],
        "ready_s",
        "stored_s",
        "cached_s",
        "orders_per_s_from_start",
        "orders_per_s",
    )
    assert ingest["ours"]["dead_lettered"] == 0
    # The local stack runs here: the worker's, PostgreSQL's and Kafka's CPU are all counted.
    assert_positive(
        "ingest.ours.cpu_us_per_order",
        ingest["ours"]["cpu_us_per_order"],
        "worker",
        "postgres",
        "kafka",
        "machine_busy",
        "machine_available",
    )
    assert_positive("ingest.kafka_floor", ingest["kafka_floor"], "seconds", "orders_per_s")
    assert_positive("ingest.pg_floor", ingest["pg_floor"], "seconds", "orders_per_s")
    for name in ("pg_floor_2", "copy_versioned", "copy_versioned_2", "copy_floor", "copy_floor_2"):
        assert_positive(f"ingest.{name}", ingest[name], "seconds", "orders_per_s")
    assert_positive("ingest.naive", ingest["naive"], "sample", "orders_per_s", "extrapolated_s")
    for name in ("faust_floor", "faust_floor_fast"):
        assert_positive(f"ingest.{name}", ingest[name], "seconds", "orders_per_s")
    assert_positive(
        "ingest.ratios",
        ingest["ratios"],
        "ours_to_slower_floor",
        "ours_to_naive",
        "ours_to_faust_floor",
        "ours_to_faust_floor_fast",
        "faust_fast_to_stock",
        "ours_to_copy_floor",
        "ours_to_copy_floor_2",
        "service_statement_to_copy_floor",
        "copy_versioned_to_service_statement",
        "copy_floor_2_to_1",
        "ours_to_slower_floor_2",
        "pg_floor_2_to_1",
        "copy_versioned_2_to_pg_floor_2",
    )

    cells = {cell["kind"]: cell for cell in results["lookup"]["results"]["cells"]}
    assert sorted(cells) == sorted(KINDS)
    for kind, cell in cells.items():
        assert cell["connections"] == 1
        assert_positive(f"lookup.{kind}.ours", cell["ours"], *LOAD_KEYS)
        assert cell["ours"]["socket_errors"] == 0
        assert_positive(f"lookup.{kind}", cell, "ratio_to_floor")
    for kind in ("cache", "missing"):
        assert_positive(f"lookup.{kind}.floor", cells[kind]["floor"], *LOAD_KEYS)
    assert cells["cache"]["cache_hits"] > 0 and cells["cache"]["ours"]["non_2xx"] == 0
    assert cells["nocache"]["cache_hits"] == 0
    assert cells["missing"]["ours"]["non_2xx"] > 0  # 404s
    assert cells["missing"]["negative_cache_hits"] > 0  # a miss answered again without PostgreSQL
    assert cells["missing-nocache"]["negative_cache_hits"] == 0

    restart = results["restart"]["results"]
    assert_positive(
        "restart.cold_warm_up", restart["cold_warm_up"], "ready_s", "cached_s", "orders_per_s"
    )
    assert restart["cold_warm_up"]["warm_up_sent"] == ORDERS
    for store in ("rocksdb", "memory"):
        assert_positive(f"restart.{store}", restart[store], "ready_s", "rss_bytes")

    memory = results["memory"]["results"]
    for store in ("rocksdb", "memory"):
        assert_positive(f"memory.{store}", memory[store], "rss_empty_bytes", "rss_cached_bytes")
        # 200 orders are within the noise of RSS: any sign will do, but a number.
        assert isinstance(memory[store]["bytes_per_cached_order"], float)

    # One run: README's figures block is rendered from exactly these results.
    assert len({record["run"] for part, record in results.items() if part in STACK_PARTS}) == 1
    written = (tmp_path / "README.md").read_text()
    assert bench_readme.block_in(written) == bench_readme.render(tmp_path)
    assert f"{ORDERS:,} orders" in bench_readme.block_in(written)
    assert written.replace(bench_readme.block_in(written), "") == (
        (REPO_ROOT / "README.md")
        .read_text()
        .replace(bench_readme.block_in((REPO_ROOT / "README.md").read_text()), "")
    ), "only the block between the markers changes"

    chart = results["chart"]["results"]
    assert chart["png"] == "latest.png" and chart["bytes"] > 0
    assert (tmp_path / "latest.png").read_bytes().startswith(b"\x89PNG")


async def test_soak_records_memory_files_and_disk_over_time(
    tmp_path: Path, pg_server: str, kafka_brokers: str
) -> None:
    """`bench soak` at a tiny size (it is not part of `all`): samples over time, a chart."""
    command = [
        sys.executable,
        "-m",
        "bench",
        "soak",
        "--soak-duration",
        "3",
        "--rate",
        "50",
        "--lookup-rate",
        "20",
        "--cache-size",
        "40",
        "--partitions",
        "2",
        "--sample-interval",
        "1",
        "--timeout",
        "60",
        "--results-dir",
        str(tmp_path),
    ]
    env = {**os.environ, "PG_URL": pg_server, "KAFKA_BROKERS": kafka_brokers}
    done = await asyncio.to_thread(
        subprocess.run, command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    [found] = tmp_path.glob("????-??-??-soak.json")
    soak = orjson.loads(found.read_bytes())["results"]
    assert soak["produced"] == 150 and soak["cache_bound"] == 40
    assert len(soak["samples"]) >= 3
    for sample in soak["samples"]:
        assert_positive("soak.sample", sample, "rss_bytes", "open_files")
    assert_positive("soak", soak, "rss_max_bytes", "data_max_bytes", "open_files_max")
    assert (tmp_path / soak["png"]).read_bytes().startswith(b"\x89PNG")


async def test_tracing_part_records_both_modes(
    tmp_path: Path, pg_server: str, kafka_brokers: str
) -> None:
    """`bench tracing` at a tiny size (not part of `all`): ingest and lookups, off and on."""
    command = [
        sys.executable,
        "-m",
        "bench",
        "tracing",
        "--orders",
        "100",
        "--partitions",
        "2",
        "--duration",
        "0.5",
        "--connections",
        "1",
        "--timeout",
        "60",
        "--results-dir",
        str(tmp_path),
    ]
    env = {**os.environ, "PG_URL": pg_server, "KAFKA_BROKERS": kafka_brokers}
    done = await asyncio.to_thread(
        subprocess.run, command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    [found] = tmp_path.glob("????-??-??-tracing.json")
    result = orjson.loads(found.read_bytes())["results"]
    for mode in ("off", "on"):
        assert len(result["runs"][mode]) == 2
        best = result["best"][mode]
        assert_positive(f"tracing.{mode}", best, "ingest_orders_per_s")
        assert_positive(f"tracing.{mode}.lookups", best["lookups"]["1"], *LOAD_KEYS)
        assert best["lookups"]["1"]["non_2xx"] == 0
    assert result["spans_exported"]["requests"] > 0  # the on runs' batches and lookups
    assert_positive("tracing.off_helpers", result["off_helpers"], "ns_per_batch")
