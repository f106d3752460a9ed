"""The cache Table's RocksDB store: bounded memory, and local state that can always be rebuilt.

This is the one module that touches Faust's private store internals (``Store._dbs``,
``Store._db_for_partition``, ``Store._open_for_partition``, the memory store's dict, the
recovery service's standby partitions and how standby changes and their offset are applied);
tests/unit/test_rocksdb_options.py pins what it relies on, so a Faust upgrade fails a test rather
than production. PartitionStore is what the rest of the cache uses: reads and writes of one
known partition, a partition's changes and its changelog offset in one RocksDB WriteBatch.

Bounded memory. Faust opens every partition's database with 64 MiB write buffers (three of
them) and a 2 GiB block cache of its own, and never flushes a small table: a worker's RSS and
its write-ahead log grew with every order stored. Here each partition's write buffer is
ROCKSDB_WRITE_BUFFER_MB, all the partitions share one block cache (ROCKSDB_BLOCK_CACHE_MB) and
their unflushed writes together are capped at ROCKSDB_MAX_WAL_MB.

Stale state. The files keep the changelog offset they reflect. When Kafka's data is wiped or
the changelog topic is recreated, that offset lies beyond the topic's end and Faust's
recovery stops the worker with ``ConsistencyError`` on every start. The cache is only a copy
(of the changelog, and of PostgreSQL), so such a partition's files are discarded before
recovery reads their offset; recovery then replays the changelog from its start, and the
warm-up fills an empty cache from PostgreSQL. A partition whose files cannot be opened
(corruption, missing files) is discarded and rebuilt the same way.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence, Set
from typing import Any

import faust
import rocksdict
from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.offset import OffsetRequest
from faust import stores
from faust.exceptions import ConsumerNotStarted
from faust.stores.rocksdb import DB, RocksDBOptions
from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TP

from ..config import Settings

logger = logging.getLogger(__name__)

# Registered with Faust's store registry, so a Table takes it as a store URL.
DRIVER = "orderstream-rocksdb"
stores.STORES[DRIVER] = f"{__name__}:CacheStore"

MIB = 1024 * 1024
# A partition's memtable may be flushed while the next one fills: two at most.
MAX_WRITE_BUFFER_NUMBER = 2
# Open SST files kept per partition (Faust: 90% of the process's file limit, per partition).
MAX_OPEN_FILES = 64
# RocksDB's own info LOG files: a few small ones instead of one per start, unbounded.
KEEP_LOG_FILE_NUM = 2
MAX_LOG_FILE_SIZE = MIB // 4

# ListOffsets' timestamp for the end of a partition.
LATEST_OFFSET = -1
EARLIEST_OFFSET = -2

# A change is a key and its new value; None deletes the key.
Change = tuple[bytes, bytes | None]


def store_url(settings: Settings) -> str:
    """The cache Table's store: this module's RocksDB store, or Faust's memory store."""
    return f"{DRIVER}://" if settings.cache_store == "rocksdb://" else settings.cache_store


def table_options(settings: Settings) -> dict[str, Any]:
    """Options for the cache Table's store (ignored by the memory store)."""
    return {
        "write_buffer_size": settings.rocksdb_write_buffer_mb * MIB,
        "max_write_buffer_number": MAX_WRITE_BUFFER_NUMBER,
        "block_cache_size": settings.rocksdb_block_cache_mb * MIB,
        "max_open_files": MAX_OPEN_FILES,
        "max_total_wal_size": settings.rocksdb_max_wal_mb * MIB,
        "max_unflushed_size": settings.rocksdb_max_wal_mb * MIB,
        "keep_log_file_num": KEEP_LOG_FILE_NUM,
        "max_log_file_size": MAX_LOG_FILE_SIZE,
    }


def is_lock_error(exc: BaseException) -> bool:
    """RocksDB's LOCK is held (by another worker on the same files): Faust retries those."""
    return "lock" in str(exc).lower()


def is_unreadable(exc: BaseException) -> bool:
    """rocksdict raises a plain Exception whose message starts with RocksDB's status."""
    return str(exc).startswith(
        ("Corruption", "IO error", "Invalid argument")
    ) and not is_lock_error(exc)


class SharedRocksDBOptions(RocksDBOptions):
    """Faust's RocksDB options, with one block cache and one write budget for all partitions.

    Faust builds a new 2 GiB block cache for each partition it opens; here one LRU cache of
    ``block_cache_size`` serves them all (index and filter blocks included), and one write
    buffer manager caps their memtables together at ``max_unflushed_size``: past 90% of it,
    the partition being written is flushed to a table file. A partition's write-ahead log
    holds what its memtables do (RocksDB deletes a log once they are flushed; its own
    ``max_total_wal_size`` acts only with several column families), so the same cap bounds
    the logs.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.use_rocksdict:
            raise ValueError("orderstream's RocksDB store needs rocksdict")
        self.block_cache = rocksdict.Cache(self.block_cache_size)
        self.write_buffer_manager = rocksdict.WriteBufferManager(
            int(self.extra_options["max_unflushed_size"]), False
        )

    def as_options(self) -> rocksdict.Options:
        extra: Mapping[str, Any] = self.extra_options
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_max_open_files(-1 if self.max_open_files is None else self.max_open_files)
        options.set_write_buffer_size(self.write_buffer_size)
        options.set_max_write_buffer_number(self.max_write_buffer_number)
        options.set_write_buffer_manager(self.write_buffer_manager)
        options.set_target_file_size_base(self.target_file_size_base)
        options.set_max_total_wal_size(int(extra["max_total_wal_size"]))
        options.set_keep_log_file_num(int(extra["keep_log_file_num"]))
        options.set_max_log_file_size(int(extra["max_log_file_size"]))
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, True)
        table.set_block_cache(self.block_cache)
        table.set_cache_index_and_filter_blocks(True)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        return options


class CacheStore(RocksDBStore):
    """Faust's RocksDB store with shared, bounded options and self-healing partitions."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Faust popped its own keys (driver, read_only); the rest are RocksDB options.
        self.rocksdb_options = SharedRocksDBOptions(
            **(self.options or {}), use_rocksdict=self.use_rocksdict
        )

    # --- reads and writes of one known partition (PartitionStore) ----------------------

    def get_in(self, partition: int, key: bytes) -> bytes | None:
        """The value of ``key`` in ``partition``, if this worker has that partition open.

        Faust's own get finds the partition from the current stream event or, outside a
        stream, probes every partition's database.
        """
        db = self._dbs.get(partition)
        return None if db is None else db.get(key)

    def applied_offset(self, partition: int) -> int | None:
        """The changelog offset the partition's data reflects, if the partition is open.

        Faust's standby recovery writes a batch's changes, then this offset: read before the
        data, it never claims more than the data holds. Unlike Faust's persisted_offset, a
        partition that is not open stays closed.
        """
        db = self._dbs.get(partition)
        offset = None if db is None else db.get(self.offset_key)
        return None if offset is None else int(offset)

    def write_in(
        self, partition: int, changes: Sequence[Change], offset: tuple[TP, int] | None = None
    ) -> None:
        """Apply ``changes`` to ``partition`` and record its changelog offset, atomically."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in changes:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        if offset is not None:
            batch.put(self.offset_key, str(offset[1]).encode())
        self._db_for_partition(partition).write(batch)

    # --- stale or unreadable local state ----------------------------------------------

    def _open_for_partition(self, partition: int) -> DB:
        """Open the partition's database; one that cannot be read is discarded and recreated."""
        try:
            return super()._open_for_partition(partition)
        except Exception as exc:  # rocksdict raises plain Exceptions; only some are ours
            if not is_unreadable(exc):
                raise
            logger.warning(
                "Discarding the local files of cache partition %d (%s): they cannot be "
                "opened (%s). The partition is rebuilt from its changelog and PostgreSQL.",
                partition,
                self.partition_path(partition),
                exc,
            )
            self._discard(partition)
            return super()._open_for_partition(partition)

    async def on_rebalance(
        self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP], generation_id: int = 0
    ) -> None:
        """Discard partitions ahead of their changelog, before recovery reads their offset.

        Faust's table manager calls this before its recovery service reads the persisted
        offsets (and raises ConsistencyError for an offset beyond the topic's end).
        """
        mine = self.table.changelog_topic.topics
        await self.discard_stale([tp for tp in newly_assigned if tp.topic in mine])
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

    async def discard_stale(self, tps: Iterable[TP]) -> list[TP]:
        """Discard the partitions whose persisted offset is at or beyond the topic's end."""
        persisted = {}
        for tp in tps:
            try:
                offset = self.persisted_offset(tp)
            except Exception as exc:  # held by another process: Faust waits for the lock
                if not is_lock_error(exc):
                    raise
                continue
            if offset is not None:
                persisted[tp] = offset
        if not persisted:
            return []
        try:
            ends = await self.app.consumer.highwaters(*persisted)
        except (TimeoutError, KafkaError) as exc:
            # Faust's recovery asks the broker again; the worst case is Faust's own error.
            logger.warning(
                "Could not read the end offsets of %s to check the local cache "
                "files against them: %r",
                sorted(persisted),
                exc,
            )
            return []
        stale = sorted(
            tp
            for tp, offset in persisted.items()
            if ends.get(tp) is not None and offset >= ends[tp]
        )
        if stale:
            logger.warning(
                "Discarding the local files of cache partitions %s of %s: their changelog "
                "offsets (%s) are beyond the topic's end (%s), so Kafka's data was wiped, the "
                "topic recreated or the files belong to another cluster. The partitions are "
                "rebuilt from the changelog and PostgreSQL.",
                ", ".join(str(tp.partition) for tp in stale),
                stale[0].topic,
                ", ".join(str(persisted[tp]) for tp in stale),
                ", ".join(str(ends[tp]) for tp in stale),
            )
            for tp in stale:
                self._discard(tp.partition)
        return stale

    def _discard(self, partition: int) -> None:
        """Close the partition's database and delete its files; it reopens empty."""
        db = self._dbs.pop(partition, None)
        if db is not None:
            db.close()
        shutil.rmtree(self.partition_path(partition), ignore_errors=True)


def standby_partitions(app: faust.App) -> Set[TP]:
    """The changelog partitions this worker keeps standby copies of, in this assignment.

    Faust's recovery service keeps the set (cleared and refilled in place on each rebalance),
    so a lookup tests membership without building a set from the assignor.
    """
    return app.tables.recovery.standby_tps  # type: ignore[attr-defined]


def fetched_end(app: faust.App, tp: TP) -> int | None:
    """The changelog partition's end (next offset) as of the consumer's last fetch of it.

    Only a lower bound of the end at any later time; None until the partition is fetched.
    """
    try:
        end = app.consumer.highwater(tp)
    except (AssertionError, ConsumerNotStarted):  # aiokafka asserts the tp is assigned to it
        return None  # not (yet, or any more) in this worker's assignment
    return end if isinstance(end, int) else None


async def end_offsets(
    client: AIOKafkaClient, tps: Iterable[TP], *, at: int = LATEST_OFFSET
) -> dict[TP, int]:
    """The partitions' ends (next offsets), as their leaders answer a request sent now;
    ``at=EARLIEST_OFFSET``: their starts.

    A ListOffsets request (the latest offset, read uncommitted: the high watermark) through
    an aiokafka client on the caller's loop: Faust's ``consumer.highwaters`` goes through its
    consumer thread, whose method queue can hold the call behind a fetch for a second and
    more. A partition whose leader is unknown or refused is left out (and the client's
    metadata refreshed).
    """
    by_leader: dict[int, dict[str, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
    for tp in tps:
        leader = client.cluster.leader_for_partition(tp)
        if leader is None or leader == -1:
            client.add_topic(tp.topic)
            client.force_metadata_update()
            continue
        by_leader[leader][tp.topic].append((tp.partition, at))
    replies = await asyncio.gather(
        *(
            client.send(leader, OffsetRequest(-1, 0, list(topics.items())))
            for leader, topics in by_leader.items()
        )
    )
    ends: dict[TP, int] = {}
    for reply in replies:
        for topic, partitions in reply.topics:
            for partition, error_code, *found in partitions:
                if error_code != 0:  # e.g. not the leader any more
                    client.force_metadata_update()
                    continue
                if reply.API_VERSION == 0:
                    if found[0]:
                        ends[TP(topic, partition)] = found[0][0]
                else:
                    ends[TP(topic, partition)] = found[1]  # (timestamp, offset, ...)
    return ends


class PartitionStore:
    """The table's Faust store, read and written one partition at a time.

    Faust finds a key's partition from the current stream event, or, outside a stream, by
    probing every partition's RocksDB (a large part of a cache hit's time); here it is known.
    RocksDB goes through CacheStore; Faust's memory store (CACHE_STORE=memory://) is a dict.
    """

    def __init__(self, table: faust.Table) -> None:
        self.table = table

    def get(self, partition: int, key: bytes) -> bytes | None:
        store = self.table.data
        if isinstance(store, CacheStore):
            return store.get_in(partition, key)  # only partitions this worker holds are open
        return store.data.get(key)

    def applied_offset(self, partition: int) -> int | None:
        """The changelog offset the partition's data reflects (None: unknown, memory store)."""
        store = self.table.data
        return store.applied_offset(partition) if isinstance(store, CacheStore) else None

    def apply(
        self, partition: int, changes: Sequence[Change], offset: tuple[TP, int] | None = None
    ) -> None:
        """Apply the changes and record the changelog offset, in one write where it can be."""
        store = self.table.data
        if isinstance(store, CacheStore):
            store.write_in(partition, changes, offset)
            return
        data = store.data
        for key, value in changes:
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        if offset is not None:
            store.set_persisted_offset(*offset)
