"""The negative cache against real workers: a recent miss is answered 404 without PostgreSQL,
and never hides an order once it is stored (cache/negative.py has the rule)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from harness import Worker, eventually
from orderstream.order.generator import random_orders
from orderstream.order.records import Order

from ..private_stack import PrivateStack
from .test_pipeline import lookup, publish, wait_stored

NEGATIVE = "negative-cache"


async def source_of(http: aiohttp.ClientSession, worker: Worker, uid: str) -> str | None:
    status, headers, _ = await lookup(http, worker, uid)
    assert status == 404, (status, headers)
    return headers.get("X-Source")


async def remembered(http: aiohttp.ClientSession, worker: Worker, uid: str) -> None:
    """Look ``uid`` up until the worker answers it from the negative cache (it must own the
    partition first: a worker that has just started has no assignment yet)."""

    async def negative() -> bool:
        return await source_of(http, worker, uid) == NEGATIVE

    await eventually(negative, what=f"{uid} answered from the negative cache")


async def negative_hits(http: aiohttp.ClientSession, worker: Worker) -> float:
    async with http.get(f"{worker.url}/metrics") as reply:
        text = await reply.text()
    line = next(x for x in text.splitlines() if x.startswith("orderstream_negative_cache_hits"))
    return float(line.split()[-1])


async def test_a_miss_is_answered_again_without_postgresql(
    start_worker: Any, http: aiohttp.ClientSession, own_database: PrivateStack
) -> None:
    """The second 404 needs no PostgreSQL: it is answered with PostgreSQL stopped, while an id
    never looked up is answered 503, and ?nocache=1 always reads PostgreSQL.

    A remembered miss is still served during an outage: no order can be stored meanwhile
    (the write path retries until PostgreSQL is back), so it is still true.
    """
    worker = await start_worker(PG_URL=own_database.pg_url, DB_RETRY_MAX="0.5")
    await remembered(http, worker, "never-stored")
    before = await negative_hits(http, worker)
    assert await source_of(http, worker, "never-stored") == NEGATIVE
    assert await negative_hits(http, worker) == before + 1

    await asyncio.to_thread(own_database.pg_stop)
    try:
        status, headers, body = await lookup(http, worker, "never-stored")
        assert (status, headers["X-Source"]) == (404, NEGATIVE), body
        status, headers, body = await lookup(http, worker, "never-looked-up")
        assert (status, headers["X-Source"]) == (503, "db"), body
        status, headers, body = await lookup(http, worker, "never-stored", "?nocache=1")
        assert (status, headers["X-Source"]) == (503, "db"), body
    finally:
        await asyncio.to_thread(own_database.pg_up)
    await eventually(
        lambda: source_of(http, worker, "never-looked-up"), what="PostgreSQL answering again"
    )


async def test_the_bound(start_worker: Any, http: aiohttp.ClientSession) -> None:
    """NEGATIVE_CACHE_SIZE misses at most, the least recently used forgotten first."""
    worker = await start_worker(NEGATIVE_CACHE_SIZE="5")
    await remembered(http, worker, "probe")
    uids = [f"unknown-{n}" for n in range(10)]
    assert [await source_of(http, worker, uid) for uid in uids] == ["db"] * 10
    assert [await source_of(http, worker, uid) for uid in uids[5:]] == [NEGATIVE] * 5
    assert [await source_of(http, worker, uid) for uid in uids[:5]] == ["db"] * 5


async def test_ttl(start_worker: Any, http: aiohttp.ClientSession) -> None:
    worker = await start_worker(NEGATIVE_CACHE_TTL="1")
    await remembered(http, worker, "short-lived")
    await asyncio.sleep(1.2)
    assert await source_of(http, worker, "short-lived") == "db"


class Hammer:
    """Lookups of some ids, in several tasks at once, until stopped; keeps when each ended."""

    def __init__(
        self, http: aiohttp.ClientSession, workers: list[Worker], uids: list[str], tasks: int = 8
    ) -> None:
        self.http = http
        self.answers: dict[str, list[tuple[float, float, int, str]]] = {uid: [] for uid in uids}
        self._tasks = [
            asyncio.create_task(self._run(workers[n % len(workers)], uids)) for n in range(tasks)
        ]

    async def _run(self, worker: Worker, uids: list[str]) -> None:
        while True:
            for uid in uids:
                started = time.monotonic()
                status, headers, _ = await lookup(self.http, worker, uid)
                self.answers[uid].append(
                    (started, time.monotonic(), status, headers.get("X-Source", ""))
                )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def check(self, uid: str) -> None:
        """Once a lookup has answered 200, every lookup begun after it answers 200."""
        answers = self.answers[uid]
        found = min(ended for _, ended, status, _ in answers if status == 200)
        after = [(status, source) for started, _, status, source in answers if started > found]
        assert after, f"no lookup of {uid} after its first 200"
        assert all(status == 200 for status, _ in after), (uid, [a for a in after if a[0] != 200])


@pytest.mark.parametrize("cache", ["true", "false"])
async def test_a_stored_order_is_never_hidden(
    cache: str,
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    clean_database: str,
) -> None:
    """The race: orders are published while their ids are looked up without pause. Every
    lookup begun after the first 200 of an id answers 200 (with CACHE_ENABLED=false too,
    where every lookup reads PostgreSQL until the miss is remembered)."""
    worker = await start_worker(CACHE_ENABLED=cache)
    await remembered(http, worker, "probe")
    orders = list(random_orders(15, 40))
    uids = [o.order_uid for o in orders]
    hammer = Hammer(http, [worker], uids)
    try:
        await asyncio.sleep(1.0)
        for index in range(0, len(orders), 4):  # several batches, each raced by the lookups
            await publish(producer, pipeline_env["KAFKA_TOPIC"], orders[index : index + 4])
            await asyncio.sleep(0.1)
        await wait_stored(clean_database, set(uids))
        await asyncio.sleep(1.0)
    finally:
        await hammer.stop()
    negative = sum(source == NEGATIVE for a in hammer.answers.values() for *_, source in a)
    assert negative, "no miss was remembered before the orders came: the test proved nothing"
    for uid in uids:
        hammer.check(uid)


async def stored_after_remembered(
    http: aiohttp.ClientSession,
    producer: AIOKafkaProducer,
    topic: str,
    database_url: str,
    orders: list[Order],
    workers: list[Worker],
) -> None:
    """Publish ``orders`` and wait until stored; then every worker answers each with 200."""
    await publish(producer, topic, orders)
    await wait_stored(database_url, {o.order_uid for o in orders})
    for worker in workers:
        for order in orders:
            status, headers, _ = await lookup(http, worker, order.order_uid)
            assert status == 200, (worker.url, order.order_uid, headers)


async def test_across_a_restart(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    clean_database: str,
) -> None:
    """Misses remembered before a restart hide nothing stored while the worker was down."""
    orders = list(random_orders(16, 8))
    worker = await start_worker("restarted", CACHE_ENABLED="false")
    for order in orders:
        await remembered(http, worker, order.order_uid)
    assert worker.stop() == 0
    await publish(producer, pipeline_env["KAFKA_TOPIC"], orders)
    worker = await start_worker("restarted", CACHE_ENABLED="false")
    await wait_stored(clean_database, {o.order_uid for o in orders})
    for order in orders:
        status, headers, _ = await lookup(http, worker, order.order_uid)
        assert status == 200, (order.order_uid, headers)


@pytest.mark.parametrize("cache", ["true", "false"])
async def test_two_workers(
    cache: str,
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    clean_database: str,
) -> None:
    """Misses remembered by one worker, then a second joins and takes half the partitions
    over: orders it then stores are found on both, never hidden by the first's misses."""
    orders = list(random_orders(17, 16))
    first = await start_worker(CACHE_ENABLED=cache)
    for order in orders:
        await remembered(http, first, order.order_uid)
    second = await start_worker(CACHE_ENABLED=cache)

    async def second_remembers() -> bool:  # it owns partitions: the rebalance is done
        for order in orders:
            status, headers, _ = await lookup(http, second, order.order_uid)
            if headers.get("X-Source") == NEGATIVE:
                return True
        return False

    await eventually(second_remembers, timeout=60, what="the second worker owning partitions")
    hammer = Hammer(http, [first, second], [o.order_uid for o in orders])
    try:
        await stored_after_remembered(
            http, producer, pipeline_env["KAFKA_TOPIC"], clean_database, orders, [first, second]
        )
        await asyncio.sleep(0.5)
    finally:
        await hammer.stop()
    for order in orders:
        hammer.check(order.order_uid)
