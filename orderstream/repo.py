"""Every SQL statement of the service, behind one repository around an asyncpg pool."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager, contextmanager
from typing import AsyncIterator, Iterable, Iterator, Optional, Sequence

import asyncpg
import orjson

from .models import Order, encode_order, order_from_dict
from .pg_tls import asyncpg_arguments, connect_naming_tls

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


# Failures of asyncpg's own side of a connection: "connection is closed", "cannot switch to
# state 12; another operation is in progress" after a server restart cut a query short, a
# protocol error. The connection's state is unknown afterwards, so it is never reused.
CLIENT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
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

    A client-side failure (CLIENT_ERRORS) heals too: a new connection replaces the broken one.
    A bad setting (ClientConfigurationError) and anything else are not retried: they pass
    through unchanged.
    """
    try:
        yield
    except asyncpg.exceptions.ClientConfigurationError:
        raise
    except TRANSIENT_ERRORS as exc:
        raise DatabaseUnavailable(str(exc) or type(exc).__name__) from exc
    except CLIENT_ERRORS as exc:
        raise DatabaseUnavailable(f"connection failed: {exc or type(exc).__name__}") from exc
    except DATA_ERRORS as exc:
        raise OrderRejected(str(exc)) from exc


# A batch is one statement over the orders' wire JSON as an array, and their versions. The
# server takes the JSON apart; the client sends the bodies it has already encoded (binding
# ~60 column values an order cost this process more than the rest of storing it). Each body
# is kept, verbatim, in orders.body for lookups. An order stored again replaces the old copy
# unless the stored copy has a newer version (kafka_offset, sql/0003): its rows are updated
# and items past its new count deleted. The statement returns the order_uids it wrote. Every
# row of a batch is written in order_uid order (see latest_per_uid).
UPSERT_BATCH = """
WITH batch AS MATERIALIZED (
    SELECT element.value::text AS body, versions.kafka_offset, o.*
    FROM json_array_elements($1::json) WITH ORDINALITY AS element(value, n)
    JOIN unnest($2::bigint[]) WITH ORDINALITY AS versions(kafka_offset, n) ON versions.n = element.n,
    json_to_record(element.value) AS o(
        order_uid text, track_number text, entry text, delivery json, payment json, items json,
        locale text, internal_signature text, customer_id text, delivery_service text,
        shardkey text, sm_id bigint, date_created timestamptz, oof_shard text)
), upserted_orders AS (
    INSERT INTO orders (order_uid, track_number, entry, locale, internal_signature, customer_id,
                        delivery_service, shardkey, sm_id, date_created, oof_shard, body,
                        kafka_offset)
    SELECT order_uid, track_number, entry, locale, internal_signature, customer_id,
           delivery_service, shardkey, sm_id, date_created, oof_shard, body, kafka_offset
    FROM batch
    ON CONFLICT (order_uid) DO UPDATE SET
        body = EXCLUDED.body, kafka_offset = EXCLUDED.kafka_offset,
        track_number = EXCLUDED.track_number, entry = EXCLUDED.entry, locale = EXCLUDED.locale,
        internal_signature = EXCLUDED.internal_signature, customer_id = EXCLUDED.customer_id,
        delivery_service = EXCLUDED.delivery_service, shardkey = EXCLUDED.shardkey,
        sm_id = EXCLUDED.sm_id, date_created = EXCLUDED.date_created,
        oof_shard = EXCLUDED.oof_shard, stored_at = now()
    WHERE orders.kafka_offset IS NULL OR EXCLUDED.kafka_offset IS NULL
       OR orders.kafka_offset <= EXCLUDED.kafka_offset
    RETURNING order_uid
), written AS MATERIALIZED (
    SELECT b.* FROM batch b JOIN upserted_orders USING (order_uid)
), upserted_deliveries AS (
    INSERT INTO deliveries (order_uid, name, phone, zip, city, address, region, email)
    SELECT b.order_uid, d.name, d.phone, d.zip, d.city, d.address, d.region, d.email
    FROM written b, json_to_record(b.delivery) AS d(name text, phone text, zip text, city text,
                                                    address text, region text, email text)
    ON CONFLICT (order_uid) DO UPDATE SET
        name = EXCLUDED.name, phone = EXCLUDED.phone, zip = EXCLUDED.zip, city = EXCLUDED.city,
        address = EXCLUDED.address, region = EXCLUDED.region, email = EXCLUDED.email
), upserted_payments AS (
    INSERT INTO payments (order_uid, transaction, request_id, currency, provider, amount,
                          payment_dt, bank, delivery_cost, goods_total, custom_fee)
    SELECT b.order_uid, p.transaction, p.request_id, p.currency, p.provider, p.amount,
           p.payment_dt, p.bank, p.delivery_cost, p.goods_total, p.custom_fee
    FROM written b, json_to_record(b.payment) AS p(
        transaction text, request_id text, currency text, provider text, amount bigint,
        payment_dt bigint, bank text, delivery_cost bigint, goods_total bigint, custom_fee bigint)
    ON CONFLICT (order_uid) DO UPDATE SET
        transaction = EXCLUDED.transaction, request_id = EXCLUDED.request_id,
        currency = EXCLUDED.currency, provider = EXCLUDED.provider, amount = EXCLUDED.amount,
        payment_dt = EXCLUDED.payment_dt, bank = EXCLUDED.bank,
        delivery_cost = EXCLUDED.delivery_cost, goods_total = EXCLUDED.goods_total,
        custom_fee = EXCLUDED.custom_fee
), removed_items AS (
    DELETE FROM items i USING written b
    WHERE i.order_uid = b.order_uid AND i.position >= json_array_length(b.items)
), upserted_items AS (
    INSERT INTO items (order_uid, position, chrt_id, track_number, price, rid, name, sale, size,
                       total_price, nm_id, brand, status)
    SELECT b.order_uid, i.n - 1, i.chrt_id, i.track_number, i.price, i.rid, i.name, i.sale,
           i.size, i.total_price, i.nm_id, i.brand, i.status
    FROM written b, ROWS FROM (json_to_recordset(b.items) AS (
            chrt_id bigint, track_number text, price bigint, rid text, name text, sale int,
            size text, total_price bigint, nm_id bigint, brand text, status int))
        WITH ORDINALITY AS i(chrt_id, track_number, price, rid, name, sale, size, total_price,
                             nm_id, brand, status, n)
    ON CONFLICT (order_uid, position) DO UPDATE SET
        chrt_id = EXCLUDED.chrt_id, track_number = EXCLUDED.track_number, price = EXCLUDED.price,
        rid = EXCLUDED.rid, name = EXCLUDED.name, sale = EXCLUDED.sale, size = EXCLUDED.size,
        total_price = EXCLUDED.total_price, nm_id = EXCLUDED.nm_id, brand = EXCLUDED.brand,
        status = EXCLUDED.status
)
SELECT order_uid FROM upserted_orders
"""

# An order's wire JSON built from its rows, for an order stored without its body (before
# migration 0002, or by another writer): the wire format's key order, date_created spelt as
# encode_order spells it (UTC, "Z", microseconds when there are any).
ORDER_DOCUMENT = """(
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
    'shardkey', o.shardkey, 'sm_id', o.sm_id, 'date_created', to_char(
        o.date_created AT TIME ZONE 'UTC', CASE WHEN date_trunc('second', o.date_created)
        = o.date_created THEN 'YYYY-MM-DD"T"HH24:MI:SS"Z"' ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"' END),
    'oof_shard', o.oof_shard)::text
FROM deliveries d, payments p
WHERE d.order_uid = o.order_uid AND p.order_uid = o.order_uid)"""

# The body stored with the order (one row by key, no join), or, without one, built from the rows.
SELECT_BODY = f"SELECT o.body, CASE WHEN o.body IS NULL THEN {ORDER_DOCUMENT} END FROM orders o "

GET_ORDER = SELECT_BODY + "WHERE o.order_uid = $1"

LOAD_RECENT = (SELECT_BODY.replace("SELECT o.body,", "SELECT o.body, o.kafka_offset,")
               + "ORDER BY o.date_created DESC, o.order_uid LIMIT $1")

# An order to store: its order_uid, its wire JSON (from encode_order) and its version (the
# offset of its message on its own partition; None: unknown, written whatever is stored).
EncodedOrder = tuple[str, bytes, Optional[int]]


def latest_per_uid(orders: Iterable[EncodedOrder]) -> list[EncodedOrder]:
    """Keep the newest version of each order (the last one on a tie), sorted by id.

    One statement cannot upsert the same key twice, and a fixed row order keeps
    concurrent batches from deadlocking each other.
    """
    latest: dict[str, EncodedOrder] = {}
    for order in orders:
        kept = latest.get(order[0])
        if kept is None or kept[2] is None or order[2] is None or order[2] >= kept[2]:
            latest[order[0]] = order
    return [latest[uid] for uid in sorted(latest)]


def json_array(bodies: Iterable[bytes]) -> str:
    return (b"[" + b",".join(bodies) + b"]").decode()


def wire_json(body: Optional[str], built: Optional[str]) -> bytes:
    """A SELECT_BODY row as the wire JSON: the stored body as it is, else the built document
    made compact (PostgreSQL's JSON text has spaces around its colons)."""
    if body is not None:
        return body.encode()
    return orjson.dumps(orjson.loads(built or "null"))


async def keep_session(connection: asyncpg.Connection) -> None:
    """A pool's reset that sends nothing: the repository leaves no session state to undo
    (no SET, LISTEN, advisory lock or open transaction), and asyncpg's default reset costs a
    round trip on every release, one per lookup."""


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
        """Create the pool; connections open lazily so start-up survives a database outage.

        PG_URL's TLS parameters become an SSLContext here (pg_tls.py): a CA or key file
        that cannot be read stops start-up; a refused certificate is an outage that names them.
        """
        dsn, ssl_context = asyncpg_arguments(self.dsn)
        self._pool = await asyncpg.create_pool(
            dsn, ssl=ssl_context, connect=connect_naming_tls,
            min_size=0, max_size=self.pool_size,
            command_timeout=self.command_timeout,
            # json_build_object renders timestamps in the session time zone.
            server_settings={"timezone": "UTC"},
            reset=keep_session,
        )

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; errors translated, and one that failed client-side is closed.

        asyncpg's pool would hand a connection back out after "cannot switch to state ...;
        another operation is in progress" (a server restart cut its query short); terminated,
        the pool opens a new one instead.
        """
        with translated_errors():
            async with self.pool.acquire() as conn:
                try:
                    yield conn
                except CLIENT_ERRORS:
                    conn.terminate()
                    raise

    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless PostgreSQL answers a query."""
        async with self.connection() as conn:
            await conn.fetchval("SELECT 1")

    async def upsert_many(self, orders: Sequence[Order]) -> set[str]:
        """Store a batch in one transaction; an order stored again replaces the old copy."""
        return await self.upsert_encoded(
            [(order.order_uid, encode_order(order), None) for order in orders])

    async def upsert_encoded(self, orders: Iterable[EncodedOrder]) -> set[str]:
        """upsert_many for orders already encoded, with their versions; return the order_uids
        written (not those whose stored copy has a newer version)."""
        batch = latest_per_uid(orders)
        if not batch:
            return set()
        document = json_array(body for _, body, _ in batch)
        async with self.connection() as conn:
            rows = await conn.fetch(UPSERT_BATCH, document, [version for _, _, version in batch])
        return {row[0] for row in rows}

    async def get(self, order_uid: str) -> Optional[Order]:
        """The whole order in one round trip, or None when there is none."""
        body = await self.get_body(order_uid)
        return None if body is None else order_from_dict(orjson.loads(body))

    async def get_body(self, order_uid: str) -> Optional[bytes]:
        """The order's wire JSON, byte for byte what encode_order gives; None when absent.

        Not validated again: it was valid when stored.
        """
        async with self.connection() as conn:
            row = await conn.fetchrow(GET_ORDER, order_uid)
        return None if row is None else wire_json(*row)

    async def load_recent(self, limit: int) -> list[Order]:
        """The newest orders by date_created, newest first."""
        return [order for order, _ in await self.load_recent_versions(limit)]

    async def load_recent_versions(self, limit: int) -> list[tuple[Order, Optional[int]]]:
        """load_recent with each order's version (the cache warm-up)."""
        async with self.connection() as conn:
            rows = await conn.fetch(LOAD_RECENT, limit)
        # The stored body, else the document built from the rows: parsed either way.
        return [(order_from_dict(orjson.loads(body if body is not None else built)), version)
                for body, version, built in rows]
