"""Writes to the cache: stored orders go to the cache agent in bundles, and the warm-up.

A Table can be changed only while an event of the key's partition is being handled, and a
batch of stored orders is no such event (faust-streaming #497). So stored orders travel
through the cache-updates topic, a bundle per partition, and the cache agent writes each
bundle while handling it (README "Cache" says why this hop stays).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from faust.exceptions import NotReady, ProducerSendError
from faust.types import EventT

from ..logs import event_position
from ..order import encode_order
from ..repo import DatabaseUnavailable
from .bundle import MalformedBundle, bundle, unbundle
from .entry import encode_entry
from .policy import RecentOrders

if TYPE_CHECKING:
    from ..app import OrderApp

logger = logging.getLogger(__name__)

# On a cache update: the order comes from the warm-up and must not replace a newer entry.
WARM_UP_HEADER = "x-cache-warm-up"

# A stored order for the cache: its partition, its key and its Table value (entry.py).
CacheEntry = tuple[int, bytes, bytes]


async def send_to_cache(
    app: OrderApp, entries: Sequence[CacheEntry], *, warm_up: bool = False
) -> None:
    """Send stored orders to the cache agent, bundled by partition; wait until Kafka has them."""
    if not app.recent_orders.enabled or not entries:
        return
    by_partition: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
    for partition, key, value in entries:
        by_partition[partition].append((key, value))
    headers = [(WARM_UP_HEADER, b"1")] if warm_up else None
    topic = app.cache_updates_topic
    sent = [
        await topic.send(value=data, partition=partition, headers=headers)
        for partition, group in by_partition.items()
        for data in bundle(group)
    ]
    await asyncio.gather(*sent)


async def apply_cache_update(cache: RecentOrders, event: EventT) -> None:
    """Write one bundle into the cache Table; a warm-up never replaces a newer entry."""
    try:
        entries = unbundle(event.value)
    except MalformedBundle as exc:
        # Only the cache misses out: the orders are stored, lookups read PostgreSQL.
        logger.error("Skipping a cache update at %s: %s", event_position(event), exc)
        return
    warm_up = WARM_UP_HEADER in dict(event.headers or {})
    await cache.remember(event.message.partition, entries, keep_newer=warm_up)


async def warm_up_when_empty(app: OrderApp) -> None:
    """The Go service's LoadRecent: an empty cache is filled with the newest stored orders."""
    cache, settings = app.recent_orders, app.settings
    if not cache.enabled or not cache.is_empty():
        return
    logger.info(
        "Cache warm-up: loading up to %d recent orders from PostgreSQL", settings.cache_size
    )
    try:
        orders = await app.repo.load_recent_versions(settings.cache_size)
    except DatabaseUnavailable as exc:
        logger.warning("Cache warm-up skipped, PostgreSQL unavailable: %s", exc)
        return
    owned = {
        tp.partition
        for tp in app.assignor.assigned_actives()
        if tp.topic == app.cache_updates_topic.get_topic_name()
    }
    entries = []
    for order, version in orders:  # each worker warms the partitions it owns
        key = order.order_uid.encode()
        partition = cache.partition_for(key)
        if partition in owned:
            entries.append((partition, key, encode_entry(version, encode_order(order))))
    logger.info("Cache warm-up: sending %d orders to the cache", len(entries))
    try:
        await send_to_cache(app, entries, warm_up=True)
    except (ProducerSendError, NotReady):
        if not app.should_stop:
            raise
        # Stopping closed the producer under us: the next start warms up again.
        logger.info("Cache warm-up interrupted: the worker is stopping")
        return
    logger.info(
        "Cache warm-up: %d of %d recent orders sent to this worker's partitions",
        len(entries),
        len(orders),
    )
