"""Every SQL statement of the service, behind one repository around an asyncpg pool."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime

import asyncpg
import orjson

from .order import Order, encode_order, order_from_dict
from .order_sql import ORDER_DOCUMENT, UPSERT_BATCH
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
    """PostgreSQL refused the data itself (say, a NUL byte in a text field): retries cannot help."""


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


# The body stored with the order (one row by key, no join), or, without one, built from the rows.
SELECT_BODY = f"SELECT o.body, CASE WHEN o.body IS NULL THEN {ORDER_DOCUMENT} END FROM orders o "

GET_ORDER = SELECT_BODY + "WHERE o.order_uid = $1"

LOAD_RECENT = (
    SELECT_BODY.replace("SELECT o.body,", "SELECT o.body, o.kafka_offset,")
    + "ORDER BY o.date_created DESC, o.order_uid LIMIT $1"
)

# The orders written last (stored_at is set on every upsert), by sql/0004's index, no scan.
# One batch shares one stored_at (its transaction's time): ties are broken by order_uid.
RECENT_STORED = (
    "SELECT order_uid, track_number, date_created, stored_at FROM orders "
    "ORDER BY stored_at DESC, order_uid DESC LIMIT $1"
)

# An order to store: its order_uid, its wire JSON (from encode_order) and its version (the
# offset of its message on its own partition; None: unknown, written whatever is stored).
EncodedOrder = tuple[str, bytes, int | None]


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


def wire_json(body: str | None, built: str | None) -> bytes:
    """A SELECT_BODY row as the wire JSON: the stored body as it is, else the built document
    made compact (PostgreSQL's JSON text has spaces around its colons)."""
    if body is not None:
        return body.encode()
    return orjson.dumps(orjson.loads(built or "null"))


async def skip_session_reset(connection: asyncpg.Connection) -> None:
    """A pool's reset that sends nothing: the repository leaves no session state to undo
    (no SET, LISTEN, advisory lock or open transaction), and asyncpg's default reset costs a
    round trip on every release, one per lookup."""


class OrderRepository:
    """Stores and reads orders in PostgreSQL; the pool opens in connect(), not here."""

    def __init__(self, dsn: str, *, pool_size: int = 4, command_timeout: float = 30.0) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self.command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None

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
            dsn,
            ssl=ssl_context,
            connect=connect_naming_tls,
            min_size=0,
            max_size=self.pool_size,
            command_timeout=self.command_timeout,
            # json_build_object renders timestamps in the session time zone.
            server_settings={"timezone": "UTC"},
            reset=skip_session_reset,
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
            [(order.order_uid, encode_order(order), None) for order in orders]
        )

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

    async def get(self, order_uid: str) -> Order | None:
        """The whole order in one round trip, or None when there is none."""
        body = await self.get_body(order_uid)
        return None if body is None else order_from_dict(orjson.loads(body))

    async def get_body(self, order_uid: str) -> bytes | None:
        """The order's wire JSON, byte for byte what encode_order gives; None when absent.

        Not validated again: it was valid when stored.
        """
        async with self.connection() as conn:
            row = await conn.fetchrow(GET_ORDER, order_uid)
        return None if row is None else wire_json(*row)

    async def load_recent(self, limit: int) -> list[Order]:
        """The newest orders by date_created, newest first."""
        return [order for order, _ in await self.load_recent_versions(limit)]

    async def recent_stored(self, limit: int) -> list[tuple[str, str, datetime, datetime]]:
        """The ``limit`` orders stored last, newest first: (order_uid, track_number,
        date_created, stored_at), for the operator's list of recent orders."""
        async with self.connection() as conn:
            rows = await conn.fetch(RECENT_STORED, limit)
        return [(row[0], row[1], row[2], row[3]) for row in rows]

    async def load_recent_versions(self, limit: int) -> list[tuple[Order, int | None]]:
        """load_recent with each order's version (the cache warm-up)."""
        async with self.connection() as conn:
            rows = await conn.fetch(LOAD_RECENT, limit)
        # The stored body, else the document built from the rows: parsed either way.
        return [
            (order_from_dict(orjson.loads(body if body is not None else built)), version)
            for body, version, built in rows
        ]
