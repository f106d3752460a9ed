"""Every SQL statement of the service, behind one repository around an asyncpg pool."""

from __future__ import annotations

import asyncio
import logging
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Optional, Sequence

import asyncpg
import orjson

from .models import Order, order_from_dict

logger = logging.getLogger(__name__)

# Failures that heal by themselves (server restarting, network blip, too many clients,
# a deadlock or serialization conflict): the caller retries these, and nothing else.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.TransactionRollbackError,
)


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached or refused the work for a reason that heals."""


class OrderRejected(Exception):
    """PostgreSQL refused the data itself (say, a NUL byte in a text field): retrying cannot help."""


# Errors caused by the values written, not by the server's state.
DATA_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
)


@contextmanager
def translated_errors() -> Iterator[None]:
    """Re-raise errors that heal as DatabaseUnavailable and bad data as OrderRejected.

    Anything else is a bug and passes through unchanged.
    """
    try:
        yield
    except TRANSIENT_ERRORS as exc:
        raise DatabaseUnavailable(str(exc) or type(exc).__name__) from exc
    except DATA_ERRORS as exc:
        raise OrderRejected(str(exc)) from exc


UPSERT_ORDERS = """
INSERT INTO orders (order_uid, track_number, entry, locale, internal_signature, customer_id,
                    delivery_service, shardkey, sm_id, date_created, oof_shard)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::bigint[], $10::timestamptz[], $11::text[])
ON CONFLICT (order_uid) DO UPDATE SET
    track_number = EXCLUDED.track_number, entry = EXCLUDED.entry, locale = EXCLUDED.locale,
    internal_signature = EXCLUDED.internal_signature, customer_id = EXCLUDED.customer_id,
    delivery_service = EXCLUDED.delivery_service, shardkey = EXCLUDED.shardkey,
    sm_id = EXCLUDED.sm_id, date_created = EXCLUDED.date_created,
    oof_shard = EXCLUDED.oof_shard, stored_at = now()
"""

UPSERT_DELIVERIES = """
INSERT INTO deliveries (order_uid, name, phone, zip, city, address, region, email)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::text[])
ON CONFLICT (order_uid) DO UPDATE SET
    name = EXCLUDED.name, phone = EXCLUDED.phone, zip = EXCLUDED.zip, city = EXCLUDED.city,
    address = EXCLUDED.address, region = EXCLUDED.region, email = EXCLUDED.email
"""

UPSERT_PAYMENTS = """
INSERT INTO payments (order_uid, transaction, request_id, currency, provider, amount, payment_dt,
                      bank, delivery_cost, goods_total, custom_fee)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],
                     $7::bigint[], $8::text[], $9::bigint[], $10::bigint[], $11::bigint[])
ON CONFLICT (order_uid) DO UPDATE SET
    transaction = EXCLUDED.transaction, request_id = EXCLUDED.request_id,
    currency = EXCLUDED.currency, provider = EXCLUDED.provider, amount = EXCLUDED.amount,
    payment_dt = EXCLUDED.payment_dt, bank = EXCLUDED.bank,
    delivery_cost = EXCLUDED.delivery_cost, goods_total = EXCLUDED.goods_total,
    custom_fee = EXCLUDED.custom_fee
"""

# A changed order replaces its items: delete the old ones, insert the new ones.
DELETE_ITEMS = "DELETE FROM items WHERE order_uid = ANY($1::text[])"

INSERT_ITEMS = """
INSERT INTO items (order_uid, position, chrt_id, track_number, price, rid, name, sale, size,
                   total_price, nm_id, brand, status)
SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::bigint[], $6::text[],
                     $7::text[], $8::int[], $9::text[], $10::bigint[], $11::bigint[], $12::text[],
                     $13::int[])
"""

# The whole order as one JSON document, in the wire format's key order: one round trip.
SELECT_ORDER_JSON = """
SELECT json_build_object(
    'order_uid', o.order_uid, 'track_number', o.track_number, 'entry', o.entry,
    'delivery', json_build_object(
        'name', d.name, 'phone', d.phone, 'zip', d.zip, 'city', d.city,
        'address', d.address, 'region', d.region, 'email', d.email),
    'payment', json_build_object(
        'transaction', p.transaction, 'request_id', p.request_id, 'currency', p.currency,
        'provider', p.provider, 'amount', p.amount, 'payment_dt', p.payment_dt,
        'bank', p.bank, 'delivery_cost', p.delivery_cost, 'goods_total', p.goods_total,
        'custom_fee', p.custom_fee),
    'items', (SELECT json_agg(json_build_object(
        'chrt_id', i.chrt_id, 'track_number', i.track_number, 'price', i.price, 'rid', i.rid,
        'name', i.name, 'sale', i.sale, 'size', i.size, 'total_price', i.total_price,
        'nm_id', i.nm_id, 'brand', i.brand, 'status', i.status) ORDER BY i.position)
        FROM items i WHERE i.order_uid = o.order_uid),
    'locale', o.locale, 'internal_signature', o.internal_signature,
    'customer_id', o.customer_id, 'delivery_service', o.delivery_service,
    'shardkey', o.shardkey, 'sm_id', o.sm_id, 'date_created', o.date_created,
    'oof_shard', o.oof_shard)::text
FROM orders o
JOIN deliveries d USING (order_uid)
JOIN payments p USING (order_uid)
"""

GET_ORDER = SELECT_ORDER_JSON + "WHERE o.order_uid = $1"

LOAD_RECENT = SELECT_ORDER_JSON + "ORDER BY o.date_created DESC, o.order_uid LIMIT $1"


def _columns(rows: Iterable[Sequence[Any]], width: int) -> list[list[Any]]:
    """Transpose rows into one list per column, the shape unnest() takes."""
    columns: list[list[Any]] = [[] for _ in range(width)]
    for row in rows:
        for column, value in zip(columns, row):
            column.append(value)
    return columns


def _batch_columns(orders: Sequence[Order]) -> dict[str, list[list[Any]]]:
    """Split orders into the per-table column arrays of one batch."""
    order_rows, delivery_rows, payment_rows, item_rows = [], [], [], []
    for o in orders:
        d, p = o.delivery, o.payment
        order_rows.append((o.order_uid, o.track_number, o.entry, o.locale, o.internal_signature,
                           o.customer_id, o.delivery_service, o.shardkey, o.sm_id,
                           o.date_created, o.oof_shard))
        delivery_rows.append((o.order_uid, d.name, d.phone, d.zip, d.city, d.address,
                              d.region, d.email))
        payment_rows.append((o.order_uid, p.transaction, p.request_id, p.currency, p.provider,
                             p.amount, p.payment_dt, p.bank, p.delivery_cost, p.goods_total,
                             p.custom_fee))
        for position, i in enumerate(o.items):
            item_rows.append((o.order_uid, position, i.chrt_id, i.track_number, i.price, i.rid,
                              i.name, i.sale, i.size, i.total_price, i.nm_id, i.brand, i.status))
    return {
        "orders": _columns(order_rows, 11),
        "deliveries": _columns(delivery_rows, 8),
        "payments": _columns(payment_rows, 11),
        "items": _columns(item_rows, 13),
    }


def latest_per_uid(orders: Iterable[Order]) -> list[Order]:
    """Keep the last version of each order, sorted by id.

    One statement cannot upsert the same key twice, and a fixed row order keeps
    concurrent batches from deadlocking each other.
    """
    latest = {order.order_uid: order for order in orders}
    return [latest[uid] for uid in sorted(latest)]


class OrderRepository:
    """Stores and reads orders in PostgreSQL; the pool opens in connect(), not here."""

    def __init__(self, dsn: str, *, pool_size: int = 4, command_timeout: float = 30.0) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self.command_timeout = command_timeout
        self._pool: Optional[asyncpg.Pool] = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("OrderRepository.connect() has not been called")
        return self._pool

    async def connect(self) -> None:
        """Create the pool; connections open lazily so start-up survives a database outage."""
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=0, max_size=self.pool_size,
            command_timeout=self.command_timeout,
            # json_build_object renders timestamps in the session time zone.
            server_settings={"timezone": "UTC"},
        )

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless PostgreSQL answers a query."""
        with translated_errors():
            await self.pool.fetchval("SELECT 1")

    async def upsert_many(self, orders: Sequence[Order]) -> None:
        """Store a batch in one transaction; an order stored again replaces the old copy."""
        batch = latest_per_uid(orders)
        if not batch:
            return
        columns = _batch_columns(batch)
        with translated_errors():
            async with self.pool.acquire() as conn:
                try:
                    async with conn.transaction():
                        await conn.execute(UPSERT_ORDERS, *columns["orders"])
                        await conn.execute(UPSERT_DELIVERIES, *columns["deliveries"])
                        await conn.execute(UPSERT_PAYMENTS, *columns["payments"])
                        await conn.execute(DELETE_ITEMS, columns["orders"][0])
                        await conn.execute(INSERT_ITEMS, *columns["items"])
                except asyncpg.InterfaceError as exc:
                    # A server that goes away mid-transaction surfaces as "cannot call
                    # Transaction.__aexit__(): the underlying connection is closed".
                    if not (conn.is_closed() or isinstance(exc.__context__, TRANSIENT_ERRORS)):
                        raise
                    raise DatabaseUnavailable(f"connection lost: {exc}") from exc

    async def get(self, order_uid: str) -> Optional[Order]:
        """The whole order in one round trip, or None when there is none."""
        with translated_errors():
            document = await self.pool.fetchval(GET_ORDER, order_uid)
        return None if document is None else order_from_dict(orjson.loads(document))

    async def load_recent(self, limit: int) -> list[Order]:
        """The newest orders by date_created, newest first (the cache warm-up)."""
        with translated_errors():
            rows = await self.pool.fetch(LOAD_RECENT, limit)
        return [order_from_dict(orjson.loads(row[0])) for row in rows]
