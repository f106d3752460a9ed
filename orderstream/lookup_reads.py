"""Lookups that read PostgreSQL, batched: concurrent reads share one query.

At 64 concurrent lookups of ``?nocache=1`` or cache misses, a query per lookup spends most of the
time on what every query costs (taking a pool connection, a round trip, PostgreSQL's parse and
plan), not on finding the row. So lookups that arrive while reads are in flight wait together,
and the next free reader answers them all with one ``WHERE order_uid = ANY($1)`` query (at most
``max_batch`` order_uids); a lookup that arrives with a reader free is read at once, alone. Two
lookups of the same order_uid in one batch share its row.

Each lookup still gets its own answer: its body, None (PostgreSQL has no such order) or the
batch's error (DatabaseUnavailable: a 503 for every lookup of the batch). A lookup's read
begins after it is queued and ends before its answer is delivered, so the negative cache's
tickets (cache/negative.py), taken before ``get_body`` and given back after it, bracket the
read as they did a lookup's own query.

At most ``readers`` queries at once: the pool's connections but those of the store path
(PG_POOL_SIZE - PG_WRITE_CONNECTIONS), so a batch's writers never wait for lookups.
"""

from __future__ import annotations

import asyncio

from .repo import SELECT_BODY, OrderRepository, wire_json

# The order_uid of each row, then SELECT_BODY's columns (repo.py).
GET_ORDERS = SELECT_BODY.replace("SELECT ", "SELECT o.order_uid, ", 1) + (
    "WHERE o.order_uid = ANY($1::text[])"
)
# Order_uids read by one query at most.
MAX_BATCH = 64


def readers_for(pool_size: int, writers: int) -> int:
    """Queries at once: the pool's connections but the store path's ``writers``."""
    return max(1, pool_size - writers)


class BatchedReads:
    """Answers ``get_body`` like OrderRepository does, with one query per batch of lookups."""

    def __init__(self, repo: OrderRepository, *, readers: int, max_batch: int = MAX_BATCH) -> None:
        self.repo = repo
        self.readers = readers
        self.max_batch = max_batch
        self.busy = 0  # queries in flight
        self.queries = 0  # queries sent, for tests and the curious
        # order_uid -> the futures of the lookups waiting for it, in arrival order.
        self._waiting: dict[str, list[asyncio.Future[bytes | None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

    async def get_body(self, order_uid: str) -> bytes | None:
        """The order's wire JSON, None when PostgreSQL has no such order.

        Raises DatabaseUnavailable (repo.py) when the batch's query failed for a reason that heals.
        """
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        waiting = self._waiting.get(order_uid)
        if waiting is None:
            self._waiting[order_uid] = [future]
        else:
            waiting.append(future)
        if self.busy < self.readers:
            self._start()
        return await future

    def _start(self) -> None:
        """Take up to max_batch waiting order_uids (oldest first) into a query of their own."""
        batch: dict[str, list[asyncio.Future[bytes | None]]] = {}
        waiting = self._waiting
        for uid in waiting:
            if len(batch) == self.max_batch:
                break
            batch[uid] = waiting[uid]
        for uid in batch:
            del waiting[uid]
        self.busy += 1
        self.queries += 1
        task = asyncio.ensure_future(self._read(batch))
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.busy -= 1
        if self._waiting and self.busy < self.readers:
            self._start()

    async def _read(self, batch: dict[str, list[asyncio.Future[bytes | None]]]) -> None:
        try:
            async with self.repo.connection() as conn:
                rows = await conn.fetch(GET_ORDERS, list(batch))
        except asyncio.CancelledError:  # the worker stops: so do the lookups waiting
            for futures in batch.values():
                for future in futures:
                    future.cancel()
            raise
        except Exception as exc:  # DatabaseUnavailable, or a bug: raised by every lookup
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        found = {row[0]: wire_json(row[1], row[2]) for row in rows}
        for uid, futures in batch.items():
            body = found.get(uid)
            for future in futures:
                if not future.done():  # a lookup cancelled meanwhile has gone
                    future.set_result(body)
