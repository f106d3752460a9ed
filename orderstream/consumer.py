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

At the end of a rebalance Faust resumes the stream partitions, seeks them to their committed
offsets (one broker round trip per partition), then resumes flow control, which empties the
agents' queues. Records fetched meanwhile were queued and then dropped, though the consumer had
counted them as read: never processed, never fetched again. Worse, the seek's reset of the read
offsets made the next record look like a jump, which Faust takes for a gap in the log (a
compacted topic, a transaction marker) and marks as done, so the next commit passed orders
nothing had stored: test_scale's kill test lost one in about 1 run of 30, more under load.
Here a seek keeps the stream partitions from delivering until flow has resumed, and then seeks
them again to what is committed by then; only after that do they deliver again.

Faust's own behaviour this relies on is pinned by tests/unit/test_consumer.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import IllegalStateError
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
    """Faust's aiokafka consumer with the thread above, committing acked offsets on revoke
    and holding the stream partitions from a seek until flow resumes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Stream partitions kept from fetching and delivering since a seek (perform_seek).
        self.held: set[TP] = set()
        self._releasing: asyncio.Task[None] | None = None

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Commit the acked offsets, then Faust's revoke (which drops their record)."""
        # A periodic commit under way may have been built before the latest acks: wait it out.
        await self.maybe_wait_for_commit_to_finish()
        await self.commit()
        await super().on_partitions_revoked(revoked)

    async def perform_seek(self) -> None:
        """Faust's seek to the committed offsets, the stream partitions held from it on.

        Faust empties the queues only after the seek (flow_control.resume); anything a
        stream partition delivered in between would be dropped there. Held, they deliver
        nothing: Faust's getmany skips a record of a partition that is neither active nor
        buffered, and a fetch asks only for the active ones."""
        acking = self.app.topics.acking_topics
        # Faust's own TPs: the assignment holds aiokafka's, which Faust's partition sets refuse.
        self.hold({TP(tp.topic, tp.partition) for tp in self.assignment() if tp.topic in acking})
        await super().perform_seek()

    def hold(self, tps: set[TP]) -> None:
        """Stop ``tps`` fetching and delivering until release_held."""
        self.held |= tps
        self._get_active_partitions().difference_update(tps)
        self._buffered_partitions.difference_update(tps)

    def resume_flow(self) -> None:
        """Faust's resume_flow, then the held partitions are released (after Faust has
        emptied the queues: flow_control.resume comes first wherever Faust resumes)."""
        super().resume_flow()
        if self._releasing is not None:
            self._releasing.cancel()  # one of an earlier resume, maybe of a past generation
        if self.held:
            self._releasing = asyncio.ensure_future(self.release_held())
            self._releasing.add_done_callback(self._on_released)

    def _on_released(self, task: asyncio.Task[None]) -> None:
        """A release that failed leaves partitions held for good: stop the worker, loudly."""
        if not task.cancelled() and (exc := task.exception()) is not None:
            asyncio.ensure_future(self.crash(exc))

    async def release_held(self) -> None:
        """Seek the held partitions to what is committed now, then let them deliver again.

        A record skipped while held had moved the fetch position past it, and whatever
        they delivered before the queues were emptied is gone: both are read again from
        the committed offset. A rebalance meanwhile leaves them held for its own seek."""
        generation = self.app.consumer_generation_id
        # A partition revoked since is no longer ours: its next seek holds it again.
        self.held &= self.assignment()
        tps = set(self.held)
        try:
            committed = {tp: self._committed_offset[tp] for tp in tps}
            offsets = {tp: offset for tp, offset in committed.items() if offset is not None}
            # Never committed: from the start, as the reset policy (earliest) reads them. A
            # seek to an offset, not aiokafka's seek_to_beginning: that leaves the position
            # unset until a reset, and Faust's livelock check then fails on it.
            never = [tp for tp, offset in committed.items() if offset is None]
            if never:
                offsets.update(await self.earliest_offsets(*never))
            for tp, offset in offsets.items():
                await self.seek(tp, offset)
        except IllegalStateError:
            return  # revoked while seeking: a rebalance is under way, as below
        if self.app.consumer_generation_id != generation or not self.flow_active:
            return  # a rebalance began: they stay held for its seek
        self.held -= tps
        assigned = self.assignment()
        self._get_active_partitions().update(
            tp for tp in tps if tp in assigned and tp not in self._paused_partitions
        )

    async def on_stop(self) -> None:
        if self._releasing is not None:
            self._releasing.cancel()  # stopping: nothing is fetched any more
        await super().on_stop()

    def on_buffer_full(self, tp: TP) -> None:
        """Faust's, but a held partition is not marked buffered: a buffered one delivers,
        and becomes active again when its queue drains; only release_held may do that."""
        if tp not in self.held:
            super().on_buffer_full(tp)


class KafkaTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with the consumer above (OrderApp._new_transport)."""

    Consumer = Consumer
