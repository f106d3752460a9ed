"""The cache's bound: each partition keeps its newest orders, the oldest are evicted."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import datetime

import faust
import orjson

from ..order import partitioning
from .changelog import ChangelogWriter
from .entry import entry_body, entry_version
from .store import Change

logger = logging.getLogger(__name__)


def created_at(body: bytes) -> datetime:
    return datetime.fromisoformat(orjson.loads(body)["date_created"])


class RecentOrders:
    """Bounds the cache: each partition keeps its newest ``capacity`` orders.

    The bound is per partition (CACHE_SIZE / partitions) because each partition has one
    owner that can evict from it. The eviction order is kept in memory and rebuilt from
    the table (by date_created) after every rebalance. Writes go through a ChangelogWriter,
    a bundle at a time.
    """

    def __init__(
        self,
        table: faust.Table,
        writer: ChangelogWriter,
        *,
        size: int,
        partitions: int,
        enabled: bool,
    ) -> None:
        self.table = table
        self.writer = writer
        self.enabled = enabled
        self.partitions = partitions
        self.capacity = max(1, size // partitions)
        self._eviction_order: dict[int, OrderedDict[bytes, None]] = {}

    def partition_for(self, key: bytes) -> int:
        """The partition of ``key`` among the service's KAFKA_PARTITIONS (see partitioning.py)."""
        return partitioning.partition_of(key, self.partitions)

    def forget_eviction_order(self) -> None:
        """Drop the eviction order; it is rebuilt from the table on next use."""
        self._eviction_order.clear()

    def lookup(self, partition: int, key: bytes) -> bytes | None:
        """The cached body of the order, if this worker holds its partition and the order."""
        if not self.enabled:
            return None
        value = self.writer.store.get(partition, key)
        return None if value is None else entry_body(value)

    def size(self) -> int | None:
        """Orders cached in this worker's active partitions, counted without a table scan.

        None while the eviction order is not rebuilt since the last rebalance: rebuilding
        scans the table, which only the next cache write does (after recovery has finished).
        """
        if not self.enabled:
            return 0
        if not self._eviction_order:
            return None
        return sum(map(len, self._eviction_order.values()))

    def is_empty(self) -> bool:
        return next(iter(self.table.keys()), None) is None

    async def remember(
        self, partition: int, entries: Sequence[tuple[bytes, bytes]], *, keep_newer: bool = False
    ) -> None:
        """Store orders of ``partition``, evicting the oldest beyond capacity.

        Call inside stream iteration of an event of ``partition``. ``entries`` are Table
        values (entry.py): one older than the cached version of its order is dropped,
        so versions never go backwards. With ``keep_newer`` (a warm-up), an order already
        cached is left as it is: the cached copy is newer.
        """
        if not self.enabled:
            return
        eviction_order = self._eviction_order_of(partition)
        changes: list[Change] = []
        pending: dict[bytes, bytes] = {}  # this bundle's values, not yet in the store
        for key, value in entries:
            if key in eviction_order:
                if keep_newer:
                    continue
                cached = pending.get(key) or self.writer.store.get(partition, key)
                if cached is not None and entry_version(value) < entry_version(cached):
                    continue
            pending[key] = value
            changes.append((key, value))
            eviction_order[key] = None
            eviction_order.move_to_end(key)
        while len(eviction_order) > self.capacity:
            oldest, _ = eviction_order.popitem(last=False)
            changes.append((oldest, None))
        await self.writer.write(partition, changes)

    def _eviction_order_of(self, partition: int) -> OrderedDict[bytes, None]:
        if partition not in self._eviction_order:
            self._rebuild(self.table.items())
        return self._eviction_order[partition]

    def _rebuild(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        by_partition: dict[int, list[tuple[datetime, bytes]]] = {
            partition: [] for partition in range(self.partitions)
        }
        for key, value in items:
            by_partition[self.partition_for(key)].append((created_at(entry_body(value)), key))
        self._eviction_order = {
            partition: OrderedDict((key, None) for _, key in sorted(entries))
            for partition, entries in by_partition.items()
        }
        logger.info(
            "Cache eviction order rebuilt: %d orders in %d partitions",
            sum(map(len, self._eviction_order.values())),
            len(self._eviction_order),
        )
