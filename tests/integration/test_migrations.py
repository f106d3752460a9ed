"""The sql/ migrations on a database of their own: up, again, down, up; and without yoyo."""

import asyncio
from typing import Any
from uuid import uuid4

import asyncpg
import pytest
from yarl import URL

from harness import store_one
from orderstream.config import Settings
from orderstream.migrations import migrate_database
from orderstream.order.generator import random_orders
from orderstream.order.records import encode_order
from orderstream.repo import OrderRepository

SQL_DIR = Settings().sql_dir  # the files production applies

TABLES = {"orders", "deliveries", "payments", "items"}
MIGRATIONS = [
    "0001.create-orders",
    "0002.order-body",
    "0003.order-version",
    "0004.orders-stored-at-index",
]

# Our tables only: yoyo keeps its own bookkeeping tables in the same schema.
LIST_TABLES = """
SELECT table_name FROM information_schema.tables
WHERE table_schema = 'public' AND table_name NOT LIKE '%yoyo%'
"""
LIST_INDEXES = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"


@pytest.fixture
async def fresh_database(pg_server: str) -> Any:
    """An empty database for one test, dropped after it."""
    name = f"orderstream_mig_{uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield str(URL(pg_server).with_path(f"/{name}"))
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def schema(url: str) -> tuple[set[str], dict[str, str]]:
    """Our tables, and every index by name with its definition."""
    conn = await asyncpg.connect(url)
    try:
        tables = {row["table_name"] for row in await conn.fetch(LIST_TABLES)}
        indexes = {row["indexname"]: row["indexdef"] for row in await conn.fetch(LIST_INDEXES)}
        return tables, indexes
    finally:
        await conn.close()


async def migrate(url: str, *, down: bool = False) -> list[str]:
    return await asyncio.to_thread(migrate_database, url, SQL_DIR, down=down)


def assert_full_schema(tables: set[str], indexes: dict[str, str]) -> None:
    assert tables == TABLES
    assert "ON public.orders USING btree (date_created DESC)" in indexes["orders_date_created_idx"]
    assert (
        "ON public.orders USING btree (stored_at DESC, order_uid DESC)"
        in indexes["orders_stored_at_idx"]
    )


async def columns(url: str, table: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        return {
            row[0]
            for row in await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = $1", table
            )
        }
    finally:
        await conn.close()


async def test_up_creates_the_schema_once(fresh_database: str) -> None:
    assert await schema(fresh_database) == (set(), {})
    assert await migrate(fresh_database) == MIGRATIONS
    assert_full_schema(*await schema(fresh_database))
    assert await migrate(fresh_database) == []  # nothing pending: a no-op
    assert_full_schema(*await schema(fresh_database))


async def test_down_drops_everything_and_up_recreates_it(fresh_database: str) -> None:
    await migrate(fresh_database)
    assert await migrate(fresh_database, down=True) == MIGRATIONS[::-1]
    tables, indexes = await schema(fresh_database)
    assert tables == set() and "orders_date_created_idx" not in indexes
    assert await migrate(fresh_database) == MIGRATIONS
    assert_full_schema(*await schema(fresh_database))


async def test_up_sql_is_idempotent_without_yoyo(fresh_database: str) -> None:
    # The Docker image's init script applies the files with psql, and yoyo may apply them again.
    conn = await asyncpg.connect(fresh_database)
    try:
        for _ in range(2):
            for name in MIGRATIONS:
                await conn.execute((SQL_DIR / f"{name}.sql").read_text())
    finally:
        await conn.close()
    assert "body" in await columns(fresh_database, "orders")
    assert_full_schema(*await schema(fresh_database))
    assert await migrate(fresh_database) == MIGRATIONS  # yoyo still records it, over the tables
    assert_full_schema(*await schema(fresh_database))


async def test_orders_stored_before_the_body_column_are_served_as_before(
    fresh_database: str,
) -> None:
    # An order written under 0001 alone (rows only), and one added after 0002 without a body
    # (another writer): both are built from their rows, byte for byte the wire JSON.
    conn = await asyncpg.connect(fresh_database)
    try:
        await conn.execute((SQL_DIR / "0001.create-orders.sql").read_text())
        old, later = random_orders(seed=8, n=2)
        await store_one(conn, old)
        await migrate(fresh_database)
        assert "body" in await columns(fresh_database, "orders")
        await store_one(conn, later)  # its row has no body
        assert await conn.fetchval(
            "SELECT body IS NULL FROM orders WHERE order_uid = $1", later.order_uid
        )
    finally:
        await conn.close()
    repo = OrderRepository(fresh_database)
    await repo.connect()
    try:
        for order in (old, later):
            assert await repo.get_body(order.order_uid) == encode_order(order)
        assert {o.order_uid for o in await repo.load_recent(10)} == {old.order_uid, later.order_uid}
    finally:
        await repo.close()
