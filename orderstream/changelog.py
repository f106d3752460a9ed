"""A table's changes written straight into its store and its changelog, many at a time.

Faust sends one changelog message per table write, through its producer buffer, sensors and
callbacks, and records the offset in RocksDB after each: about 0.2 ms of CPU an order, more than
storing the order in PostgreSQL. The cache is written a bundle at a time (bundles.py), so its
changes are produced as a few Kafka record batches instead, and the offset is recorded once.
Faust still owns the table: it recovers it from the changelog, keeps standbys and serves reads.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Optional, Sequence

import faust
from aiokafka import AIOKafkaProducer
from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TP

# A change is a key and its new value; None deletes the key (a tombstone in the changelog).
Change = tuple[bytes, Optional[bytes]]


class PartitionStore:
    """The table's Faust store, read and written one partition at a time.

    Faust finds a key's partition from the current stream event, or, outside a stream, by
    probing every partition's RocksDB (a quarter of a cache hit's time); here it is known.
    """

    def __init__(self, table: faust.Table) -> None:
        self.table = table

    def get(self, partition: int, key: bytes) -> Optional[bytes]:
        store = self.table.data
        if isinstance(store, RocksDBStore):
            db = store._dbs.get(partition)  # only partitions this worker holds are open
            return None if db is None else db.get(key)
        return store.data.get(key)

    def apply(self, partition: int, changes: Sequence[Change]) -> None:
        store = self.table.data
        if isinstance(store, RocksDBStore):
            db = store._db_for_partition(partition)
            for key, value in changes:
                if value is None:
                    db.delete(key)
                else:
                    db.put(key, value)
            return
        data = store.data
        for key, value in changes:
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value


class ChangelogWriter:
    """Applies a partition's changes to the table's store and produces them to its changelog."""

    def __init__(self, table: faust.Table, producer: Callable[[], AIOKafkaProducer]) -> None:
        self.table = table
        self.store = PartitionStore(table)
        self._producer = producer

    async def write(self, partition: int, changes: Sequence[Change]) -> None:
        """Apply ``changes`` locally, then return once Kafka has them all in the changelog."""
        if not changes:
            return
        producer = self._producer()
        self.store.apply(partition, changes)
        topic = self.table.changelog_topic.get_topic_name()
        sent: list[tuple[asyncio.Future, int]] = []
        batch = producer.create_batch()
        for key, value in changes:
            if batch.append(key=key, value=value, timestamp=None) is None:
                sent.append((await producer.send_batch(batch, topic, partition=partition),
                             batch.record_count()))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a change of {len(key) + len(value or b'')} bytes does "
                                     "not fit in one record batch")
        sent.append((await producer.send_batch(batch, topic, partition=partition),
                     batch.record_count()))
        results = await asyncio.gather(*(future for future, _ in sent))
        last_offset = results[-1].offset + sent[-1][1] - 1
        # What Faust does after each changelog message: recovery resumes after this offset.
        self.table.data.set_persisted_offset(TP(topic, partition), last_offset)
