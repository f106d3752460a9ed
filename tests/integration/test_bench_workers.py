"""Smoke test of `bench lookup --workers 2` (bench/parts/lookup_workers.py) at a tiny size: it
runs and records every setup's cells. It asserts nothing about speed (README, Scaling out)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson

from harness import REPO_ROOT

from .test_bench import assert_positive


async def test_lookup_with_two_workers_records_every_setup(
    tmp_path: Path, pg_server: str, kafka_brokers: str
) -> None:
    command = [
        sys.executable,
        "-m",
        "bench",
        "lookup",
        "--workers",
        "2",
        "--rounds",
        "1",
        "--orders",
        "300",
        "--partitions",
        "4",
        "--duration",
        "1",
        "--connections",
        "4",
        "--timeout",
        "90",
        "--results-dir",
        str(tmp_path),
    ]
    env = {**os.environ, "PG_URL": pg_server, "KAFKA_BROKERS": kafka_brokers}
    done = await asyncio.to_thread(
        subprocess.run, command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    [found] = tmp_path.glob("????-??-??-lookup-workers.json")
    results = orjson.loads(found.read_bytes())["results"]
    setups = [cell["setup"] for cell in results["cells"]]
    assert setups == ["1 worker", "2 workers", "2 workers, forwarding"]
    for cell in results["cells"]:
        assert_positive(cell["setup"], cell, "requests_per_s", "p50_ms", "p99_ms", "settled_s")
        assert cell["non_2xx"] == 0 and cell["socket_errors"] == 0, cell
        assert len(cell["per_port"]) == cell["workers"]
    assert set(results["median_ratio_to_1_worker"]) == set(setups)
