"""The naive design (the Go service's): one transaction per order, one INSERT per table and per item."""

from __future__ import annotations

import time
from typing import Sequence

import asyncpg

from orderstream.models import Order

INSERT_ORDER = """
INSERT INTO orders (order_uid, track_number, entry, locale, internal_signature, customer_id,
                    delivery_service, shardkey, sm_id, date_created, oof_shard)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
"""

INSERT_DELIVERY = """
INSERT INTO deliveries (order_uid, name, phone, zip, city, address, region, email)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""

INSERT_PAYMENT = """
INSERT INTO payments (order_uid, transaction, request_id, currency, provider, amount, payment_dt,
                      bank, delivery_cost, goods_total, custom_fee)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
"""

INSERT_ITEM = """
INSERT INTO items (order_uid, position, chrt_id, track_number, price, rid, name, sale, size,
                   total_price, nm_id, brand, status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
"""


async def store_one(conn: asyncpg.Connection, o: Order) -> None:
    """Store one order in its own transaction, statement by statement (prepared, one round trip each)."""
    d, p = o.delivery, o.payment
    async with conn.transaction():
        await conn.execute(INSERT_ORDER, o.order_uid, o.track_number, o.entry, o.locale,
                           o.internal_signature, o.customer_id, o.delivery_service, o.shardkey,
                           o.sm_id, o.date_created, o.oof_shard)
        await conn.execute(INSERT_DELIVERY, o.order_uid, d.name, d.phone, d.zip, d.city,
                           d.address, d.region, d.email)
        await conn.execute(INSERT_PAYMENT, o.order_uid, p.transaction, p.request_id, p.currency,
                           p.provider, p.amount, p.payment_dt, p.bank, p.delivery_cost,
                           p.goods_total, p.custom_fee)
        for position, i in enumerate(o.items):
            await conn.execute(INSERT_ITEM, o.order_uid, position, i.chrt_id, i.track_number,
                               i.price, i.rid, i.name, i.sale, i.size, i.total_price, i.nm_id,
                               i.brand, i.status)


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
