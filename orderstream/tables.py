"""The Table declarations: the recent-order cache, a Faust Table of serialised orders.

Its bound, writes, agent and routing are the cache package's (orderstream/cache/).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import faust

from .cache import ChangelogWriter, RecentOrders, table_options

if TYPE_CHECKING:
    from .app import OrderApp


def declare_order_cache(app: OrderApp) -> faust.Table:
    """The cache Table: recent orders by order_uid.

    Keys are the order_uid's UTF-8 bytes and values the order's JSON body, both "raw":
    the producer, the changelog and the router then hash the same bytes to the same
    partition, and a cache hit is served without serialising anything. The app's RocksDB
    store (cache/store.py) bounds its memory by the ROCKSDB_* settings and rebuilds a partition
    whose local files are stale or unreadable instead of stopping the worker.
    """
    settings = app.settings
    return app.Table(  # type: ignore[return-value]  # typed as TableT
        "order-cache",
        key_type=bytes,
        value_type=bytes,
        partitions=settings.kafka_partitions,
        options=table_options(settings),
        # A standby applies changes at least every STANDBY_READ_MAX_LAG + 1 messages (Faust's
        # default: 1,000), so an idle standby copy is within the bound and answers lookups.
        standby_buffer_size=standby_buffer_size(settings.standby_read_max_lag),
        help="Recent orders by order_uid, as their JSON body.",
    )


def standby_buffer_size(max_lag: int | None) -> int | None:
    """Changelog messages a standby buffers before applying them (None: Faust's default)."""
    return None if max_lag is None else max_lag + 1


def declare_cache(app: OrderApp) -> RecentOrders:
    """The cache Table with its bound; the eviction order is dropped on each rebalance."""
    settings = app.settings
    table = declare_order_cache(app)
    cache = RecentOrders(
        table,
        ChangelogWriter(table, lambda: app.batch_producer),
        size=settings.cache_size,
        partitions=settings.kafka_partitions,
        enabled=settings.cache_enabled,
    )

    async def forget_eviction_order(sender: faust.App, *args: object, **kwargs: object) -> None:
        cache.forget_eviction_order()

    app.on_partitions_revoked.connect(forget_eviction_order)  # type: ignore[arg-type]
    return cache
