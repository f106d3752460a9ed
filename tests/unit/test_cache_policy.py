"""The cache's bound and eviction (orderstream/cache/policy.py), on Faust's memory store.

No services: the writer applies changes to the table's store directly, as ChangelogWriter does
after Kafka has them, so what is tested is the policy: newest per partition, versions never
going backwards, a warm-up never replacing a cached order, the eviction order rebuilt.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import faust
import orjson
import pytest

from orderstream.cache import RecentOrders
from orderstream.cache.entry import encode_entry, entry_body, entry_version
from orderstream.cache.store import Change, PartitionStore
from orderstream.order import partition_of

PARTITIONS = 2


class LocalWriter:
    """ChangelogWriter's interface without Kafka: the changes go to the store only."""

    def __init__(self, table: faust.Table) -> None:
        self.store = PartitionStore(table)
        self.writes: list[tuple[int, list[Change]]] = []

    async def write(self, partition: int, changes: Sequence[Change]) -> None:
        self.writes.append((partition, list(changes)))
        self.store.apply(partition, changes)


def value(uid: str, minute: int, version: int | None = 1) -> bytes:
    body = orjson.dumps({"order_uid": uid, "date_created": f"2026-12-01T10:{minute:02d}:00Z"})
    return encode_entry(version, body)


def keys_of(partition: int, count: int, prefix: str = "o") -> list[bytes]:
    """``count`` order_uids that hash to ``partition``."""
    found: list[bytes] = []
    n = 0
    while len(found) < count:
        key = f"{prefix}{n}".encode()
        if partition_of(key, PARTITIONS) == partition:
            found.append(key)
        n += 1
    return found


@pytest.fixture
def cache(tmp_path: Path) -> RecentOrders:
    app = faust.App("cache-policy-test", datadir=str(tmp_path), store="memory://")
    table = app.Table("order-cache", key_type=bytes, value_type=bytes, partitions=PARTITIONS)
    return RecentOrders(
        table,
        LocalWriter(table),
        size=3 * PARTITIONS,  # type: ignore[arg-type]
        partitions=PARTITIONS,
        enabled=True,
    )


async def test_each_partition_keeps_its_newest_orders(cache: RecentOrders) -> None:
    keys = keys_of(0, 5)
    await cache.remember(0, [(key, value(key.decode(), n)) for n, key in enumerate(keys)])

    assert cache.capacity == 3
    assert [cache.lookup(0, key) is not None for key in keys] == [False, False, True, True, True]
    assert cache.size() == 3


async def test_a_partition_evicts_only_its_own_orders(cache: RecentOrders) -> None:
    first, second = keys_of(0, 4), keys_of(1, 2)
    await cache.remember(1, [(key, value(key.decode(), 0)) for key in second])
    await cache.remember(0, [(key, value(key.decode(), 1)) for key in first])

    assert all(cache.lookup(1, key) is not None for key in second)
    assert cache.lookup(0, first[0]) is None
    assert cache.size() == 5


async def test_an_older_version_never_replaces_a_newer_one(cache: RecentOrders) -> None:
    (key,) = keys_of(0, 1)
    await cache.remember(0, [(key, value("new", 1, version=10))])
    await cache.remember(0, [(key, value("old", 1, version=9))])
    stored = cache.writer.store.get(0, key)

    assert stored is not None and entry_version(stored) == 10
    assert orjson.loads(entry_body(stored))["order_uid"] == "new"


async def test_a_warm_up_leaves_a_cached_order_as_it_is(cache: RecentOrders) -> None:
    cached, fresh = keys_of(0, 2)
    await cache.remember(0, [(cached, value("cached", 1, version=5))])
    await cache.remember(
        0,
        [(cached, value("warm", 1, version=None)), (fresh, value("warm", 2, version=None))],
        keep_newer=True,
    )

    assert orjson.loads(cache.lookup(0, cached) or b"{}")["order_uid"] == "cached"
    assert cache.lookup(0, fresh) is not None


async def test_the_eviction_order_is_rebuilt_from_the_table_after_a_rebalance(
    cache: RecentOrders,
) -> None:
    keys = keys_of(0, 3)
    # Inserted newest first: the rebuilt order goes by date_created, not by insertion.
    await cache.remember(0, [(key, value(key.decode(), 10 - n)) for n, key in enumerate(keys)])
    cache.forget_eviction_order()
    assert cache.size() is None  # unknown until the next write rebuilds it

    (extra,) = keys_of(0, 1, prefix="x")
    await cache.remember(0, [(extra, value("extra", 30))])

    assert cache.lookup(0, keys[-1]) is None  # the oldest by date_created went
    assert cache.size() == 3


async def test_a_disabled_cache_stores_and_answers_nothing(tmp_path: Path) -> None:
    app = faust.App("cache-off-test", datadir=str(tmp_path), store="memory://")
    table = app.Table("order-cache", key_type=bytes, value_type=bytes, partitions=PARTITIONS)
    writer = LocalWriter(table)
    cache = RecentOrders(
        table,
        writer,
        size=10,
        partitions=PARTITIONS,  # type: ignore[arg-type]
        enabled=False,
    )
    (key,) = keys_of(0, 1)
    await cache.remember(0, [(key, value("a", 1))])

    assert writer.writes == [] and cache.lookup(0, key) is None and cache.size() == 0
