"""A worker process under measurement: tests.harness.Worker plus its clock, memory and readings."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from harness import Worker, eventually

POLL_INTERVAL = 0.05
WARM_UP_LOG = re.compile(r"Cache warm-up: (\d+) of (\d+) recent orders")


@dataclass
class BenchWorker(Worker):
    """Every wait returns the seconds since the process was started, when the condition was seen."""

    http: aiohttp.ClientSession | None = None
    timeout: float = 900
    started: float = 0.0

    def start(self) -> BenchWorker:
        self.started = time.monotonic()
        super().start()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self.http is not None, "no HTTP session"
        return self.http

    def since_start(self) -> float:
        return time.monotonic() - self.started

    def rss(self) -> int:
        """Resident memory now, from /proc/<pid>/status (VmRSS), in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for worker {self.pid}")

    def warm_up_sent(self) -> int | None:
        """Orders the worker's warm-up sent to its cache, from its log; None if it did not run."""
        found = WARM_UP_LOG.findall(self.log())
        return sum(int(sent) for sent, _ in found) if found else None

    async def until(
        self, check: Callable[[], Awaitable[Any]], what: str, interval: float = POLL_INTERVAL
    ) -> float:
        """Poll ``check`` until truthy, failing at once if the process exits."""

        async def alive_and_done() -> Any:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"worker exited with {self.process.returncode} while waiting "
                    f"for {what}:\n{self.log_tail()}"
                )
            return await check()

        try:
            await eventually(alive_and_done, timeout=self.timeout, interval=interval, what=what)
        except AssertionError as exc:
            raise RuntimeError(f"{exc}\n{self.log_tail()}") from None
        return self.since_start()

    async def wait_ready(self) -> float:
        """Until the first `/ready` 200."""

        async def ready() -> bool:
            try:
                async with self.session.get(f"{self.url}/ready") as reply:
                    return reply.status == 200
            except aiohttp.ClientError:
                return False

        return await self.until(ready, "/ready 200")

    async def metrics(self) -> dict[str, float]:
        """The worker's Prometheus samples by name, labelled series summed."""
        async with self.session.get(f"{self.url}/metrics") as reply:
            text = await reply.text()
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[sample.name] = samples.get(sample.name, 0.0) + sample.value
        return samples

    async def wait_cached(self, n: int) -> float:
        """Until `orderstream_cache_size` reaches ``n``."""

        async def cached() -> bool:
            try:
                return (await self.metrics()).get("orderstream_cache_size", 0) >= n
            except aiohttp.ClientError:  # not serving yet
                return False

        return await self.until(cached, f"{n} orders cached", interval=0.25)

    async def wait_stored(self, pg_url: str, n: int) -> float:
        """Until PostgreSQL holds ``n`` orders."""
        conn = await asyncpg.connect(pg_url)
        try:

            async def stored() -> bool:
                return await conn.fetchval("SELECT count(*) FROM orders") >= n

            return await self.until(stored, f"{n} orders in PostgreSQL", interval=0.1)
        finally:
            await conn.close()

    async def sources(self, uids: Sequence[str], connections: int = 1) -> set[str | None]:
        """The X-Source of lookups of ``uids``: {"cache"} when the cache answered them all."""
        found: set[str | None] = set()
        pending = iter(uids)  # shared by the clients

        async def client() -> None:
            for uid in pending:
                async with self.session.get(f"{self.url}/order/{uid}") as reply:
                    await reply.read()
                    found.add(reply.headers.get("X-Source") if reply.status == 200 else None)

        await asyncio.gather(*(client() for _ in range(connections)))
        return found
