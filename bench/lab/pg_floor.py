"""PostgreSQL's floor for ingest: the fastest durable upsert of the orders into the four tables.

Per batch, one transaction: the rows are taken from the wire JSON the worker has (orjson) and
copied by binary COPY into two temporary tables of the connection (one row per order with its
delivery and payment, one per item; emptied at every commit), then upserted from there.

- floor (``FLOOR_UPSERTS``): one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` per table, sent
  as one query; none of the service's rules (versions, the uids written, stale items deleted).
  On 1 connection, and on 2 at once (batch i on connection i % 2, as two partitions' batches).
- versioned (``UPSERT_STAGED``): the same COPY with the service's rules, one statement like
  order_sql.UPSERT_BATCH (an older version never replaces a newer one, items past the new count
  deleted, the uids written returned): the candidate write path, measured beside the service's
  and not adopted (README, Performance). On 2 connections each batch is split in two halves
  written at once, as the service splits a batch (PG_WRITE_CONNECTIONS).

``statement_upsert`` is the service's own statement (OrderRepository.upsert_encoded) with each
batch split the same way: the PostgreSQL floor on as many connections as the worker writes on.

Generated from the field tables (order/validation.py), like order_sql.py. Every value comes from
generated, valid orders: nothing here maps bad data to the service's errors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import asyncpg
import orjson

from orderstream.order.validation import (
    DELIVERY_FIELDS,
    ITEM_FIELDS,
    ORDER_FIELDS,
    PAYMENT_FIELDS,
    Field,
    column_type,
)
from orderstream.repo import EncodedOrder, OrderRepository, latest_per_uid

STAGED_ORDERS = "staged_orders"
STAGED_ITEMS = "staged_items"
NESTED = (("delivery", DELIVERY_FIELDS), ("payment", PAYMENT_FIELDS))
# (staged column, field) of an order's row: its own scalars, then delivery's and payment's.
ORDER_ROW: tuple[tuple[str, Field], ...] = (
    *((field[0], field) for field in ORDER_FIELDS),
    *((f"{key}_{field[0]}", field) for key, fields in NESTED for field in fields),
)
ORDER_COLUMNS = (*(name for name, _ in ORDER_ROW), "body", "kafka_offset", "item_count")
ITEM_COLUMNS = ("order_uid", "position", *(field[0] for field in ITEM_FIELDS))
# A timestamp is staged as its wire text and an integer as bigint; the server converts them.
_STAGE_TYPES = {"timestamptz": "text", "int": "bigint"}


def _stage_type(field: Field) -> str:
    return _STAGE_TYPES.get(column_type(field), column_type(field))


def _value(field: Field, column: str) -> str:
    """A staged column as its table's type."""
    kind = column_type(field)
    return column if kind == _stage_type(field) else f"{column}::{kind}"


def _names(fields: Sequence[Field]) -> str:
    return ", ".join(field[0] for field in fields)


def _updates(fields: Sequence[Field]) -> str:
    return ", ".join(f"{name} = EXCLUDED.{name}" for name, _, _ in fields)


CREATE_STAGING = f"""
CREATE TEMPORARY TABLE IF NOT EXISTS {STAGED_ORDERS} (
    {", ".join(f"{name} {_stage_type(field)}" for name, field in ORDER_ROW)},
    body text, kafka_offset bigint, item_count integer
) ON COMMIT DELETE ROWS;
CREATE TEMPORARY TABLE IF NOT EXISTS {STAGED_ITEMS} (
    order_uid text, position integer,
    {", ".join(f"{field[0]} {_stage_type(field)}" for field in ITEM_FIELDS)}
) ON COMMIT DELETE ROWS;
"""

_OWN = ORDER_FIELDS[1:]  # what an upsert of an order changes
_ORDER_VALUES = ", ".join(_value(field, field[0]) for field in ORDER_FIELDS)
_ITEM_VALUES = ", ".join(_value(field, "s." + field[0]) for field in ITEM_FIELDS)


def _nested_values(key: str, fields: Sequence[Field]) -> str:
    return ", ".join(_value(field, f"s.{key}_{field[0]}") for field in fields)


def _floor_upserts() -> str:
    statements = [
        f"INSERT INTO orders ({_names(ORDER_FIELDS)}, body, kafka_offset) "
        f"SELECT {_ORDER_VALUES}, body, kafka_offset FROM {STAGED_ORDERS} ORDER BY order_uid "
        f"ON CONFLICT (order_uid) DO UPDATE SET {_updates(_OWN)}, "
        "body = EXCLUDED.body, kafka_offset = EXCLUDED.kafka_offset, stored_at = now()"
    ]
    for (key, fields), table in zip(NESTED, ("deliveries", "payments"), strict=True):
        statements.append(
            f"INSERT INTO {table} (order_uid, {_names(fields)}) "
            f"SELECT s.order_uid, {_nested_values(key, fields)} FROM {STAGED_ORDERS} s "
            f"ORDER BY s.order_uid ON CONFLICT (order_uid) DO UPDATE SET {_updates(fields)}"
        )
    statements.append(
        f"INSERT INTO items (order_uid, position, {_names(ITEM_FIELDS)}) "
        f"SELECT s.order_uid, s.position, {_ITEM_VALUES} FROM {STAGED_ITEMS} s "
        "ORDER BY s.order_uid, s.position "
        f"ON CONFLICT (order_uid, position) DO UPDATE SET {_updates(ITEM_FIELDS)}"
    )
    return ";\n".join(statements)


FLOOR_UPSERTS = _floor_upserts()


def _versioned_part(table: str, key: str, fields: Sequence[Field]) -> str:
    return f"""
    INSERT INTO {table} (order_uid, {_names(fields)})
    SELECT s.order_uid, {_nested_values(key, fields)}
    FROM {STAGED_ORDERS} s JOIN upserted_orders USING (order_uid)
    ORDER BY s.order_uid
    ON CONFLICT (order_uid) DO UPDATE SET {_updates(fields)}"""


# xmax is 0 on a row the upsert inserted (no items of it can exist) and not 0 on one it
# updated: only those are searched for items past their new count.
UPSERT_STAGED = f"""
WITH upserted_orders AS (
    INSERT INTO orders ({_names(ORDER_FIELDS)}, body, kafka_offset)
    SELECT {_ORDER_VALUES}, body, kafka_offset FROM {STAGED_ORDERS} ORDER BY order_uid
    ON CONFLICT (order_uid) DO UPDATE SET
        body = EXCLUDED.body, kafka_offset = EXCLUDED.kafka_offset,
        {_updates(_OWN)}, stored_at = now()
    WHERE orders.kafka_offset IS NULL OR EXCLUDED.kafka_offset IS NULL
       OR orders.kafka_offset <= EXCLUDED.kafka_offset
    RETURNING order_uid, xmax <> 0 AS replaced
), upserted_deliveries AS ({_versioned_part("deliveries", "delivery", DELIVERY_FIELDS)}
), upserted_payments AS ({_versioned_part("payments", "payment", PAYMENT_FIELDS)}
), removed_items AS (
    DELETE FROM items i USING {STAGED_ORDERS} s
    WHERE i.order_uid = ANY (ARRAY(SELECT order_uid FROM upserted_orders WHERE replaced))
      AND s.order_uid = i.order_uid AND i.position >= s.item_count
), upserted_items AS (
    INSERT INTO items (order_uid, position, {_names(ITEM_FIELDS)})
    SELECT s.order_uid, s.position, {_ITEM_VALUES}
    FROM {STAGED_ITEMS} s JOIN upserted_orders USING (order_uid)
    ORDER BY s.order_uid, s.position
    ON CONFLICT (order_uid, position) DO UPDATE SET {_updates(ITEM_FIELDS)}
)
SELECT order_uid FROM upserted_orders
"""

_ORDER_KEYS = tuple(field[0] for field in ORDER_FIELDS)
_NESTED_KEYS = tuple((key, tuple(field[0] for field in fields)) for key, fields in NESTED)
_ITEM_KEYS = tuple(field[0] for field in ITEM_FIELDS)

Row = tuple[object, ...]


def staged_rows(batch: Sequence[EncodedOrder]) -> tuple[list[Row], list[Row]]:
    """The staged rows of a batch: one per order (its columns, delivery's, payment's, body,
    version, item count) and one per item, from each order's wire JSON."""
    orders: list[Row] = []
    items: list[Row] = []
    for uid, body, version in batch:
        data = orjson.loads(body)
        row: list[object] = [data[key] for key in _ORDER_KEYS]
        for key, keys in _NESTED_KEYS:
            part = data[key]
            row.extend([part[name] for name in keys])
        its = data["items"]
        row.extend((body.decode(), version, len(its)))
        orders.append(tuple(row))
        items.extend(
            (uid, position, *[item[key] for key in _ITEM_KEYS]) for position, item in enumerate(its)
        )
    return orders, items


async def copy_batch(
    conn: asyncpg.Connection, batch: Sequence[EncodedOrder], *, versioned: bool
) -> set[str] | None:
    """One batch in one transaction: COPY, then the floor's upserts or the versioned statement
    (which returns the uids it wrote)."""
    orders, items = staged_rows(latest_per_uid(batch))
    async with conn.transaction():
        await conn.copy_records_to_table(STAGED_ORDERS, records=orders, columns=ORDER_COLUMNS)
        await conn.copy_records_to_table(STAGED_ITEMS, records=items, columns=ITEM_COLUMNS)
        if versioned:
            return {row[0] for row in await conn.fetch(UPSERT_STAGED)}
        await conn.execute(FLOOR_UPSERTS)
    return None


async def staging_connection(pg_url: str) -> asyncpg.Connection:
    """A connection as the repository's (UTC), with the staging tables."""
    conn = await asyncpg.connect(pg_url, server_settings={"timezone": "UTC"})
    await conn.execute(CREATE_STAGING)
    return conn


def batches_of(encoded: Sequence[EncodedOrder], batch_size: int) -> list[Sequence[EncodedOrder]]:
    return [encoded[first : first + batch_size] for first in range(0, len(encoded), batch_size)]


async def copy_upsert(
    pg_url: str,
    encoded: Sequence[EncodedOrder],
    batch_size: int,
    *,
    connections: int = 1,
    versioned: bool = False,
    split: bool = False,
) -> float:
    """Upsert ``encoded`` in batches by COPY on ``connections`` connections at once; seconds.

    Each connection writes every ``connections``-th batch, or, with ``split``, every batch is
    split into ``connections`` parts written at once (the next batch waits for them all).
    """
    batches = batches_of(encoded, batch_size)
    conns = [await staging_connection(pg_url) for _ in range(connections)]
    try:

        async def one_connection(index: int) -> None:
            for batch in batches[index::connections]:
                await copy_batch(conns[index], batch, versioned=versioned)

        async def split_batches() -> None:
            for batch in batches:
                await asyncio.gather(
                    *(
                        copy_batch(conns[index], batch[index::connections], versioned=versioned)
                        for index in range(connections)
                    )
                )

        started = time.perf_counter()
        if split:
            await split_batches()
        else:
            await asyncio.gather(*(one_connection(index) for index in range(connections)))
        return time.perf_counter() - started
    finally:
        for conn in conns:
            await conn.close()


async def statement_upsert(
    pg_url: str, encoded: Sequence[EncodedOrder], batch_size: int, *, connections: int
) -> float:
    """Upsert ``encoded`` in batches by the service's statement, each batch split into
    ``connections`` parts written at once on a pool of that many connections; seconds.

    The parts stand in for the worker's groups of partitions: disjoint orders of about equal
    count (generated uids are random, so every ``connections``-th order will do).
    """
    repo = OrderRepository(pg_url, pool_size=connections)
    await repo.connect()
    try:
        started = time.perf_counter()
        for batch in batches_of(encoded, batch_size):
            await asyncio.gather(
                *(repo.upsert_encoded(batch[index::connections]) for index in range(connections))
            )
        return time.perf_counter() - started
    finally:
        await repo.close()
