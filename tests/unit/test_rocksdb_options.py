"""The cache's RocksDB store (cache/store.py): bounded options, and the Faust internals it uses.

These run the store in-process on a throwaway Faust app (no services): the options must
reach the database RocksDB opens (read back from its OPTIONS file), and the private Faust
behaviour the adapter relies on is pinned here, so an upgrade that changes it fails a test.
"""

from __future__ import annotations

import inspect
import logging
import re
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.stores.rocksdb import Store as RocksDBStore
from faust.tables import recovery
from faust.tables.manager import TableManager
from faust.types import TP

from orderstream.cache.store import CacheStore, store_url, table_options
from orderstream.config import Settings

MIB = 1024 * 1024


def rocksdb_options_file(partition_dir: Path) -> dict[str, str]:
    """``name=value`` pairs of the newest OPTIONS-* file RocksDB wrote in a database dir."""
    newest = max(partition_dir.glob("OPTIONS-*"), key=lambda p: int(p.name.split("-")[1]))
    return dict(re.findall(r"^\s*([A-Za-z_]+)=(.*)$", newest.read_text(), re.MULTILINE))


@pytest.fixture
def cache_store(tmp_path: Path) -> Any:
    """A CacheStore on a throwaway app, as tables.py declares it, with small settings."""
    settings = Settings(
        rocksdb_write_buffer_mb=3,
        rocksdb_block_cache_mb=5,
        rocksdb_max_wal_mb=7,
        kafka_partitions=2,
    )
    app = faust.App("pin-test", datadir=str(tmp_path), store=store_url(settings))
    table = app.Table(
        "order-cache",
        key_type=bytes,
        value_type=bytes,
        partitions=2,
        options=table_options(settings),
    )
    store = table.data
    yield store
    for db in store._dbs.values():
        db.close()


def test_the_table_gets_orderstreams_store_through_fausts_registry(cache_store: Any) -> None:
    assert type(cache_store) is CacheStore
    assert isinstance(cache_store, RocksDBStore)  # Faust's recovery and standbys still apply
    assert store_url(Settings(cache_store="memory://")) == "memory://"


def test_the_settings_reach_the_opened_database(cache_store: CacheStore) -> None:
    cache_store.write_in(0, [(b"k", b"v")])
    options = rocksdb_options_file(cache_store.partition_path(0))
    assert int(options["write_buffer_size"]) == 3 * MIB
    assert int(options["max_write_buffer_number"]) == 2
    assert int(options["max_total_wal_size"]) == 7 * MIB
    assert int(options["keep_log_file_num"]) == 2
    assert int(options["max_open_files"]) == 64
    assert options["cache_index_and_filter_blocks"] == "true"


def test_every_partition_shares_one_block_cache_and_write_budget(cache_store: CacheStore) -> None:
    options = cache_store.rocksdb_options
    assert options.as_options() is not options.as_options()
    first, second = cache_store._db_for_partition(0), cache_store._db_for_partition(1)
    first.put(b"a", b"x" * 1000)
    second.put(b"b", b"y" * 1000)
    # One write buffer manager counts both partitions' memtables against one budget.
    assert options.write_buffer_manager.get_buffer_size() == 7 * MIB
    assert options.write_buffer_manager.get_usage() > 0
    assert options.block_cache.get_usage() >= 0


def test_writes_and_their_offset_land_together_and_read_back_by_partition(
    cache_store: CacheStore,
) -> None:
    tp = TP(cache_store.table.changelog_topic.get_topic_name(), 1)
    cache_store.write_in(1, [(b"a", b"1"), (b"b", b"2")], (tp, 41))
    cache_store.write_in(1, [(b"a", None)], (tp, 42))
    assert cache_store.get_in(1, b"a") is None and cache_store.get_in(1, b"b") == b"2"
    assert cache_store.get_in(0, b"b") is None  # partition 0 is not open
    assert cache_store.persisted_offset(tp) == 42


def test_an_unreadable_partition_is_discarded_with_one_warning(
    cache_store: CacheStore, caplog: pytest.LogCaptureFixture
) -> None:
    tp = TP(cache_store.table.changelog_topic.get_topic_name(), 1)
    cache_store.write_in(1, [(b"a", b"1")], (tp, 5))
    cache_store._dbs.pop(1).close()
    (cache_store.partition_path(1) / "CURRENT").write_text("garbage\n")
    with caplog.at_level(logging.WARNING, logger="orderstream.cache.store"):
        assert cache_store.persisted_offset(tp) is None  # reopened empty: replayed from start
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot be opened" in warnings[0].getMessage()
    assert "Corruption" in warnings[0].getMessage()


def test_faust_behaviour_the_adapter_relies_on() -> None:
    """Pins Faust internals: if one of these fails, re-check orderstream/cache/store.py."""
    # The store opens each partition through _open_for_partition and keeps it in _dbs.
    assert "self._open_for_partition(partition)" in inspect.getsource(
        RocksDBStore._db_for_partition
    )
    assert "self.rocksdb_options.open(" in inspect.getsource(RocksDBStore._open_for_partition)
    assert "self.as_options()" in inspect.getsource(faust.stores.rocksdb.RocksDBOptions.open)
    assert RocksDBStore.offset_key == b"__faust\0offset__"
    # Tables (and so their stores) see a rebalance before recovery reads persisted offsets,
    # which is where it raises ConsistencyError for an offset beyond the changelog's end.
    manager = inspect.getsource(TableManager.on_rebalance)
    assert manager.index("table.on_rebalance") < manager.index("self.recovery.on_rebalance")
    assert "table.persisted_offset(tp)" in inspect.getsource(recovery.Recovery._add)
    restart = inspect.getsource(recovery.Recovery._restart_recovery.fun)
    assert "active_offsets[tp] > active_highwaters[tp]" in restart
    assert "raise ConsistencyError" in restart
