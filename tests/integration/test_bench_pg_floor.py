"""The bench's COPY paths (bench/lab/pg_floor.py) against a real PostgreSQL: they store what the
service's statement stores, and the versioned one keeps the service's rules, so the figures
that compare them (README, Performance) compare the same work."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import orjson
import pytest

from bench.lab.pg_floor import copy_batch, copy_upsert, staging_connection, statement_upsert
from orderstream.order.generator import random_orders
from orderstream.order.records import encode_order, order_from_dict
from orderstream.order_sql import ORDER_DOCUMENT
from orderstream.repo import OrderRepository

OrderDict = Callable[..., dict[str, Any]]

# Every stored order, as the document built from its rows and as its stored body.
STORED = f"SELECT o.order_uid, {ORDER_DOCUMENT}, o.body, o.kafka_offset FROM orders o"


async def stored(conn: asyncpg.Connection) -> dict[str, tuple[Any, str, int | None]]:
    return {
        uid: (orjson.loads(built), body, version)
        for uid, built, body, version in await conn.fetch(STORED)
    }


@pytest.fixture
async def staging(clean_database: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await staging_connection(clean_database)
    yield conn
    await conn.close()


@pytest.mark.parametrize("connections, versioned", [(1, True), (2, True), (1, False), (2, False)])
async def test_copy_stores_what_the_service_statement_stores(
    repo: OrderRepository, clean_database: str, connections: int, versioned: bool
) -> None:
    orders = list(random_orders(seed=7, n=300))
    encoded = [(order.order_uid, encode_order(order), n) for n, order in enumerate(orders)]
    # as the ingest part runs them: the versioned ones split each batch over the connections
    await copy_upsert(
        clean_database,
        encoded,
        64,
        connections=connections,
        versioned=versioned,
        split=versioned,
    )
    conn = await asyncpg.connect(clean_database, server_settings={"timezone": "UTC"})
    try:
        by_copy = await stored(conn)
        await conn.execute("TRUNCATE orders CASCADE")
        await repo.upsert_encoded(encoded)
        assert await stored(conn) == by_copy
    finally:
        await conn.close()
    assert {uid: orjson.loads(body) for uid, (_, body, _) in by_copy.items()} == {
        order.order_uid: orjson.loads(encode_order(order)) for order in orders
    }
    assert all(built == orjson.loads(body) for built, body, _ in by_copy.values())


async def test_the_statement_on_two_connections_stores_what_it_stores_on_one(
    repo: OrderRepository, clean_database: str
) -> None:
    orders = list(random_orders(seed=11, n=300))
    encoded = [(order.order_uid, encode_order(order), n) for n, order in enumerate(orders)]
    await statement_upsert(clean_database, encoded, 64, connections=2)
    conn = await asyncpg.connect(clean_database, server_settings={"timezone": "UTC"})
    try:
        on_two = await stored(conn)
        await conn.execute("TRUNCATE orders CASCADE")
        await repo.upsert_encoded(encoded)
        assert await stored(conn) == on_two
    finally:
        await conn.close()
    assert len(on_two) == 300


async def test_versioned_copy_keeps_the_service_rules(
    staging: asyncpg.Connection, order_dict: OrderDict
) -> None:
    def version(city: str, items: int = 1) -> bytes:
        data = order_dict({"delivery.city": city})
        data["items"] = [{**data["items"][0], "chrt_id": n} for n in range(items)]
        data["payment"]["goods_total"] = sum(item["total_price"] for item in data["items"])
        data["payment"]["amount"] = (
            data["payment"]["goods_total"]
            + data["payment"]["delivery_cost"]
            + data["payment"]["custom_fee"]
        )
        return encode_order(order_from_dict(data))

    uid = order_from_dict(order_dict()).order_uid
    first, second, third = version("First"), version("Second", items=3), version("Third")

    async def write(*batch: tuple[bytes, int | None]) -> set[str] | None:
        return await copy_batch(staging, [(uid, body, v) for body, v in batch], versioned=True)

    assert await write((second, 20)) == {uid}
    assert await write((first, 10)) == set()  # an older version is not written
    assert (await stored(staging))[uid][1:] == (second.decode(), 20)
    assert await staging.fetchval("SELECT count(*) FROM items") == 3
    assert await write((second, 20)) == {uid}  # the same version again is
    # in one batch the newest wins, whatever the order; its items replace the old ones
    assert await write((third, 40), (first, 30)) == {uid}
    assert (await stored(staging))[uid][1:] == (third.decode(), 40)
    assert await staging.fetchval("SELECT count(*) FROM items") == 1
    assert await write((second, None)) == {uid}  # no version: written whatever is stored
    assert await staging.fetchval("SELECT count(*) FROM items") == 3
    # the staging tables are empty after every commit
    assert await staging.fetchval("SELECT count(*) FROM staged_orders") == 0
    assert await staging.fetchval("SELECT count(*) FROM staged_items") == 0
