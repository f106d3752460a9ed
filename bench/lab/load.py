"""HTTP load for a fixed time on loopback: wrk when installed, else a bounded Python generator."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

WRK_SCRIPT = Path(__file__).resolve().with_name("wrk_lookup.lua")
WRK_MARKER = "BENCH-JSON "


@dataclass(frozen=True)
class Load:
    """What one cell of load measured; latencies in milliseconds."""

    requests: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_wrk() -> str | None:
    return shutil.which("wrk")


def wrk_version(wrk: str) -> str:
    # `wrk -v` prints its version and usage, and exits 1.
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0].strip()


async def run_wrk(
    wrk: str,
    base_url: str,
    ids_file: Path,
    query: str,
    connections: int,
    duration: float,
    threads: int = 1,
) -> Load:
    """wrk with a Lua script picking a random id of ``ids_file`` for every request."""
    process = await asyncio.create_subprocess_exec(
        wrk,
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "-s",
        str(WRK_SCRIPT),
        base_url,
        "--",
        str(ids_file),
        query,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await process.communicate()
    lines = [line for line in out.decode().splitlines() if line.startswith(WRK_MARKER)]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({process.returncode}): {out.decode()} {err.decode()}")
    raw = json.loads(lines[-1][len(WRK_MARKER) :])
    seconds = raw["duration_us"] / 1e6
    return Load(
        requests=raw["requests"],
        seconds=seconds,
        requests_per_s=raw["requests"] / seconds,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        non_2xx=raw["non_2xx"],
        socket_errors=sum(
            raw[f"errors_{kind}"] for kind in ("connect", "read", "write", "timeout")
        ),
    )


async def run_python(
    base_url: str,
    ids: Sequence[str],
    query: str,
    connections: int,
    duration: float,
    max_requests: int,
) -> Load:
    """``connections`` clients in a loop on random ids, until ``duration`` or ``max_requests``."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors = 0
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        deadline = time.perf_counter() + duration

        async def client() -> None:
            nonlocal errors
            rng = random.Random()
            while time.perf_counter() < deadline and len(latencies) < max_requests:
                url = f"{base_url}/order/{rng.choice(ids)}{query}"
                started = time.perf_counter()
                try:
                    async with session.get(url) as reply:
                        await reply.read()
                except (TimeoutError, aiohttp.ClientError):
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)
                statuses[reply.status] += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(connections)))
        seconds = time.perf_counter() - started
    latencies.sort()

    def percentile(q: float) -> float:
        return (
            1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0
        )

    return Load(
        requests=len(latencies),
        seconds=seconds,
        requests_per_s=len(latencies) / seconds,
        p50_ms=percentile(0.50),
        p90_ms=percentile(0.90),
        p99_ms=percentile(0.99),
        max_ms=1000 * latencies[-1] if latencies else 0.0,
        non_2xx=sum(count for status, count in statuses.items() if not 200 <= status < 300),
        socket_errors=errors,
    )
