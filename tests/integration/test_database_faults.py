"""PostgreSQL restarted and its backends killed under a running worker: pause, never die.

The worker's database is one of this test's own (tests/private_stack.py), so the faults
touch nothing else. Lookups and the panel's recent orders are asked for throughout: each
answers 200, or 503 with a JSON body, never a 500 or a text page.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from harness import Worker
from orderstream.order.generator import random_orders
from orderstream.order.records import Order

from ..private_stack import PrivateStack
from .test_pipeline import publish, row_counts, wait_stored

LOOKUP_INTERVAL = 0.01


class Lookups:
    """Looks orders up, from the cache and from the database, and asks for the panel's recent
    orders (always PostgreSQL), until stopped; keeps the answers of each."""

    def __init__(self, http: aiohttp.ClientSession, worker: Worker, uids: list[str]) -> None:
        self.http, self.worker, self.uids = http, worker, uids
        self.answers: list[tuple[int, str, Any]] = []
        self.recent: list[tuple[int, str, Any]] = []
        self._task = asyncio.create_task(self._run())

    async def _ask(self, path: str, answers: list[tuple[int, str, Any]]) -> None:
        async with self.http.get(f"{self.worker.url}{path}") as reply:
            body = (
                await reply.json()
                if reply.content_type == "application/json"
                else await reply.text()
            )
            answers.append((reply.status, reply.content_type, body))
        await asyncio.sleep(LOOKUP_INTERVAL)

    async def _run(self) -> None:
        while True:
            for uid in self.uids:
                for query in ("", "?nocache=1"):
                    await self._ask(f"/order/{uid}{query}", self.answers)
                await self._ask("/api/orders/recent?limit=3", self.recent)

    async def stop(self) -> None:
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task


async def survive(
    fault: Callable[[], Awaitable[None]],
    *,
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    database: PrivateStack,
    seed: int,
) -> Lookups:
    """Ingest and look up while ``fault`` runs; then check nothing was lost and nobody died."""
    worker = await start_worker(PG_URL=database.pg_url, DB_RETRY_MAX="0.5")
    topic = pipeline_env["KAFKA_TOPIC"]
    first = list(random_orders(seed, 10))
    await publish(producer, topic, first)
    await wait_stored(database.pg_url, {o.order_uid for o in first})
    rest = list(random_orders(seed + 1, 400))

    async def produce_steadily(orders: list[Order]) -> None:
        for index in range(0, len(orders), 10):
            await publish(producer, topic, orders[index : index + 10])
            await asyncio.sleep(0.05)

    lookups = Lookups(http, worker, [o.order_uid for o in first[:3]])
    producing = asyncio.create_task(produce_steadily(rest))
    try:
        await fault()
        await producing
        await wait_stored(database.pg_url, {o.order_uid for o in first + rest}, timeout=90)
    finally:
        await lookups.stop()
    assert worker.process is not None and worker.process.poll() is None, worker.log_tail()
    orders = first + rest
    counts = await row_counts(database.pg_url)
    assert counts == {
        "orders": len(orders),
        "deliveries": len(orders),
        "payments": len(orders),
        "items": sum(len(o.items) for o in orders),
    }

    for answers in (lookups.answers, lookups.recent):
        statuses = {(status, content_type) for status, content_type, _ in answers}
        assert statuses <= {(200, "application/json"), (503, "application/json")}, [
            a for a in answers if a[0] not in (200, 503)
        ][:3]
        unavailable = [body for status, _, body in answers if status == 503]
        assert all(body["error"] == "database unavailable" for body in unavailable)
    assert any(status == 503 for status, _, _ in lookups.answers), (
        "no lookup met the fault: the test proved nothing"
    )
    assert any(status == 200 for status, _, _ in lookups.recent), "recent orders never answered"
    assert "Traceback" not in worker.log()
    return lookups


async def test_postgresql_restarted_five_times_during_ingest_and_lookups(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    own_database: PrivateStack,
) -> None:
    async def restart_five_times() -> None:
        for _ in range(5):
            await asyncio.to_thread(own_database.pg_stop)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(own_database.pg_up)
            await asyncio.sleep(1.0)

    lookups = await survive(
        restart_five_times,
        start_worker=start_worker,
        pipeline_env=pipeline_env,
        producer=producer,
        http=http,
        database=own_database,
        seed=41,
    )
    # The panel's recent orders always read PostgreSQL: while it is down they answer 503.
    assert any(status == 503 for status, _, _ in lookups.recent), lookups.recent[-3:]


async def test_postgresql_backends_killed_during_ingest_and_lookups(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    own_database: PrivateStack,
) -> None:
    async def terminate_backends() -> None:
        conn = await asyncpg.connect(own_database.pg_url)
        try:
            for _ in range(25):
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = 'orders' AND pid <> pg_backend_pid()"
                )
                await asyncio.sleep(0.2)
        finally:
            await conn.close()

    await survive(
        terminate_backends,
        start_worker=start_worker,
        pipeline_env=pipeline_env,
        producer=producer,
        http=http,
        database=own_database,
        seed=43,
    )
