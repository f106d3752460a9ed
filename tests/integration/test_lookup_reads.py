"""Lookups that read PostgreSQL, batched (orderstream/lookup_reads.py): each lookup gets its
own answer, however many share a query, and a failed query fails each of its lookups."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from orderstream.lookup_reads import BatchedReads, readers_for
from orderstream.order.generator import random_orders
from orderstream.order.records import encode_order
from orderstream.repo import DatabaseUnavailable, OrderRepository

from .test_pipeline import lookup, publish, wait_stored
from .test_repo import unreachable_repo

__all__ = ["unreachable_repo"]  # a fixture of test_repo, used here too


async def test_concurrent_lookups_share_queries_and_each_gets_its_own_order(
    repo: OrderRepository,
) -> None:
    orders = list(random_orders(7, 40))
    await repo.upsert_many(orders)
    found = [order.order_uid for order in orders]
    missing = [f"missing-{n}" for n in range(20)]
    # Every id once, some twice, interleaved: found, missing and repeats in the same batches.
    asked = [uid for pair in zip(found, missing * 2, strict=True) for uid in pair] + found[:10]
    reads = BatchedReads(repo, readers=1)

    answers = await asyncio.gather(*(reads.get_body(uid) for uid in asked))

    expected = {order.order_uid: encode_order(order) for order in orders}
    assert answers == [expected.get(uid) for uid in asked]
    # The first lookup found the reader free and went alone; the rest waited for it together.
    assert reads.queries == 2
    assert reads.busy == 0


async def test_a_batch_is_bounded(repo: OrderRepository) -> None:
    orders = list(random_orders(8, 10))
    await repo.upsert_many(orders)
    reads = BatchedReads(repo, readers=1, max_batch=3)

    answers = await asyncio.gather(*(reads.get_body(order.order_uid) for order in orders))

    assert answers == [encode_order(order) for order in orders]
    assert reads.queries == 1 + 3  # alone, then 9 waiting in batches of 3


async def test_an_outage_fails_every_lookup_of_the_batch(
    unreachable_repo: OrderRepository,
) -> None:
    reads = BatchedReads(unreachable_repo, readers=1)

    answers = await asyncio.gather(
        *(reads.get_body(f"uid-{n}") for n in range(12)), return_exceptions=True
    )

    assert all(isinstance(answer, DatabaseUnavailable) for answer in answers), answers
    assert reads.busy == 0
    with pytest.raises(DatabaseUnavailable):  # and the next lookup is read again, not stuck
        await reads.get_body("uid-later")


@pytest.mark.parametrize(
    ("pool_size", "writers", "readers"), [(1, 1, 1), (2, 1, 1), (4, 1, 3), (4, 2, 2), (10, 3, 7)]
)
def test_the_store_paths_connections_are_left_to_it(
    pool_size: int, writers: int, readers: int
) -> None:
    assert readers_for(pool_size, writers) == readers


async def test_concurrent_http_lookups_of_found_missing_and_invalid_ids(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
) -> None:
    """?nocache=1 at once for stored, unknown and malformed ids: each its own answer."""
    # One connection for lookups, one for the store path: lookups must share queries.
    worker = await start_worker(PG_POOL_SIZE="2", PG_WRITE_CONNECTIONS="1")
    orders = list(random_orders(9, 30))
    await publish(producer, pipeline_env["KAFKA_TOPIC"], orders)
    await wait_stored(pipeline_env["PG_URL"], {order.order_uid for order in orders})
    asked = [
        *(order.order_uid for order in orders),
        *(f"unknown-{n}" for n in range(20)),
        *("bad%20id", "x" * 300, "semi;colon"),
    ]

    answers = await asyncio.gather(*(lookup(http, worker, uid, "?nocache=1") for uid in asked * 2))

    bodies = {order.order_uid: encode_order(order) for order in orders}
    for uid, (status, headers, body) in zip(asked * 2, answers, strict=True):
        assert headers["Content-Type"] == "application/json"
        if uid in bodies:
            assert (status, headers["X-Source"], body) == (200, "db", bodies[uid])
        elif uid.startswith("unknown-"):
            assert (status, headers["X-Source"]) == (404, "db")
            assert orjson.loads(body) == {"error": "order not found", "order_uid": uid}
        else:
            assert status == 400 and "X-Source" not in headers, (uid, status, headers)
            assert orjson.loads(body)["error"].startswith("invalid order_uid")
