"""A table's changes written straight into its store and its changelog, many at a time.

Faust sends one changelog message per table write, through its producer buffer, sensors and
callbacks, and records the offset in RocksDB after each: more CPU an order than storing it in
PostgreSQL (README "Performance"). The cache is written a bundle at a time (bundle.py), so its
changes are produced as a few Kafka record batches instead, and the offset is recorded once.
Faust still owns the table: it recovers it from the changelog, keeps standbys and serves reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import faust
from aiokafka import AIOKafkaProducer
from faust.types import TP

from .store import Change, PartitionStore


class ChangelogWriter:
    """Applies a partition's changes to the table's store and produces them to its changelog."""

    def __init__(self, table: faust.Table, producer: Callable[[], AIOKafkaProducer]) -> None:
        self.table = table
        self.store = PartitionStore(table)
        self._producer = producer

    async def write(self, partition: int, changes: Sequence[Change]) -> None:
        """Produce ``changes`` to the changelog, then apply them with their offset locally.

        The store and its recorded offset change in one RocksDB write: files never hold
        changes beyond the offset they record, nor an offset without its changes.
        """
        if not changes:
            return
        producer = self._producer()
        topic = self.table.changelog_topic.get_topic_name()
        sent: list[tuple[asyncio.Future, int]] = []
        batch = producer.create_batch()
        for key, value in changes:
            if batch.append(key=key, value=value, timestamp=None) is None:
                sent.append(
                    (
                        await producer.send_batch(batch, topic, partition=partition),
                        batch.record_count(),
                    )
                )
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(
                        f"a change of {len(key) + len(value or b'')} bytes does "
                        "not fit in one record batch"
                    )
        sent.append(
            (await producer.send_batch(batch, topic, partition=partition), batch.record_count())
        )
        results = await asyncio.gather(*(future for future, _ in sent))
        last_offset = results[-1].offset + sent[-1][1] - 1
        # What Faust records after each changelog message: recovery resumes after it.
        self.store.apply(partition, changes, (TP(topic, partition), last_offset))
