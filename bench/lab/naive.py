"""The Go service's naive design: one transaction per order, one INSERT per table and per item."""

from __future__ import annotations

import time
from collections.abc import Sequence

import asyncpg

from harness import store_one
from orderstream.order import Order


async def store_naively(pg_url: str, orders: Sequence[Order]) -> float:
    """Store ``orders`` one after the other on one connection; return seconds."""
    conn = await asyncpg.connect(pg_url)
    try:
        started = time.perf_counter()
        for order in orders:
            await store_one(conn, order)
        return time.perf_counter() - started
    finally:
        await conn.close()
