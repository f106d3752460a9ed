"""Faust's Kafka consumer, with two fixes: a fetch asks only for the partitions unpaused
when it began, and a revoke commits what is acked before Faust forgets it.

Faust passes its live set of unpaused partitions to the consumer thread, and aiokafka reads
an empty set as "every assigned partition". When Faust pauses partitions while a fetch
waits, the fetch can return records of partitions Faust never asked for; Faust drops them
as paused, but aiokafka's position has moved past them, and nothing seeks it back.

A table recovery does exactly that to standby partitions: Faust pauses the active changelog
partitions it has recovered (its set is now empty), then seeks the standby partitions to
the offsets they need and resumes them. A fetch still waiting returns the standby records
from those offsets, dropped as not yet resumed. The standby copy never receives them: one
that started empty stays empty while its partition is idle, so with STANDBY_READ_MAX_LAG
its lookups are forwarded to the owner for good; one written to later records the later
offset without the dropped changes, older than its offset claims.

Here each fetch asks for a copy of the set taken when it begins, and an empty set fetches
nothing. Records of a partition resumed meanwhile stay in aiokafka's buffer for the next
fetch.

On a revoke, Faust's consumer first drops its record of acked offsets (for every partition: the
eager protocol revokes them all) and only then lets the app wait for the streams and commit.
Offsets acked since the last periodic commit (Faust's broker_commit_interval, 2.8 s) were never
committed, and the partitions kept after the rebalance are read again from the older offset:
work done twice, found as duplicates in tests/integration/test_fastpath.py in about 1 run of 3.
Here the acked offsets are committed first, as Kafka's own clients do in onPartitionsRevoked.

Faust's own behaviour this relies on is pinned by tests/unit/test_consumer.py.
"""

from __future__ import annotations

from faust.transport.consumer import RecordMap
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread; a fetch asks for the partitions unpaused when it begins."""

    async def getmany(self, active_partitions: set[TP] | None, timeout: float) -> RecordMap:
        if active_partitions is None:  # a client-only app: every partition, as in Faust
            return await super().getmany(None, timeout)
        if not active_partitions:
            return {}  # aiokafka would read "none" as "all"
        return await super().getmany(set(active_partitions), timeout)


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with the thread above, committing acked offsets on revoke."""

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Commit the acked offsets, then Faust's revoke (which drops their record)."""
        # A periodic commit under way may have been built before the latest acks: wait it out.
        await self.maybe_wait_for_commit_to_finish()
        await self.commit()
        await super().on_partitions_revoked(revoked)


class KafkaTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with the consumer above (OrderApp._new_transport)."""

    Consumer = Consumer
