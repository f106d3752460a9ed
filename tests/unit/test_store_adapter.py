"""PartitionStore (orderstream/cache/store.py): a partition's reads and writes on either store.

The RocksDB side (CacheStore, its options and the Faust internals it relies on) is pinned in
test_rocksdb_options.py; here both stores answer the same calls the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust
import pytest
from faust.stores.memory import Store as MemoryStore
from faust.types import TP

from orderstream.cache import store_url, table_options
from orderstream.cache.store import CacheStore, PartitionStore
from orderstream.config import Settings


@pytest.fixture(params=["rocksdb://", "memory://"])
def partition_store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    settings = Settings(cache_store=request.param, kafka_partitions=2)
    app = faust.App(
        f"adapter-{request.param[:6]}", datadir=str(tmp_path), store=store_url(settings)
    )
    table = app.Table(
        "order-cache",
        key_type=bytes,
        value_type=bytes,
        partitions=2,
        options=table_options(settings),
    )
    yield PartitionStore(table)
    if isinstance(table.data, CacheStore):
        for db in table.data._dbs.values():
            db.close()


def test_changes_and_their_offset_are_applied_together(partition_store: PartitionStore) -> None:
    store = partition_store.table.data
    tp = TP(partition_store.table.changelog_topic.get_topic_name(), 1)

    partition_store.apply(1, [(b"a", b"1"), (b"b", b"2")], (tp, 7))
    partition_store.apply(1, [(b"a", None), (b"c", b"3")], (tp, 9))

    assert partition_store.get(1, b"a") is None
    assert (partition_store.get(1, b"b"), partition_store.get(1, b"c")) == (b"2", b"3")
    # The memory store keeps no offset: recovery replays its changelog from the start.
    assert store.persisted_offset(tp) == (9 if isinstance(store, CacheStore) else None)


def test_a_write_without_an_offset_keeps_the_recorded_one(partition_store: PartitionStore) -> None:
    tp = TP(partition_store.table.changelog_topic.get_topic_name(), 0)
    partition_store.apply(0, [(b"a", b"1")], (tp, 3))

    partition_store.apply(0, [(b"b", b"2")])

    store = partition_store.table.data
    assert store.persisted_offset(tp) == (3 if isinstance(store, CacheStore) else None)
    assert partition_store.get(0, b"b") == b"2"


def test_faust_memory_store_behaviour_the_adapter_relies_on(tmp_path: Path) -> None:
    """Pins Faust internals: if this fails, check PartitionStore in orderstream/cache/store.py."""
    app = faust.App("adapter-pin", datadir=str(tmp_path), store="memory://")
    table = app.Table("order-cache", key_type=bytes, value_type=bytes, partitions=2)
    store = table.data
    assert type(store) is MemoryStore
    assert isinstance(store.data, dict)  # the adapter reads and writes this dict directly
    tp = TP("t", 0)
    store.set_persisted_offset(tp, 5)  # accepted, and not kept
    assert store.persisted_offset(tp) is None
