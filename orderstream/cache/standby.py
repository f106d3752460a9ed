"""Lookups answered from this worker's standby copy of another worker's cache partition.

Each worker keeps CACHE_STANDBY_REPLICAS standby copies of other workers' partitions: Faust
replays their changelog into the local store. A lookup whose partition another worker owns is
answered from the standby copy when that copy is at most STANDBY_READ_MAX_LAG changelog
messages behind the changelog's end at the time of the lookup; else it is forwarded as before.

The bound holds at the time of the lookup, not at the last fetch: the end is read from the
partition's leader (ListOffsets, through the app's batch producer's client) by a request sent
after the lookup arrived, shared by every lookup that arrived while the previous request was
in flight. The consumer's last fetched end (a lower
bound of the true end) first turns away a copy already known to be too far behind, without a
request. Then the copy's applied offset is read, then the order: Faust writes a standby
batch's changes before their offset, so the order read is at least as new as that offset.
With the bound 0, a standby answer is as fresh as the owner's would have been when the lookup
arrived (the owner applies a change only once the changelog has it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import faust
from faust.types import TP

from .store import PartitionStore, end_offsets, fetched_end, standby_partitions

if TYPE_CHECKING:
    from ..app import OrderApp

logger = logging.getLogger(__name__)

# Seconds a lookup waits for the changelog's end before it is forwarded instead.
END_OFFSETS_TIMEOUT = 1.0

Ends = Mapping[TP, int | None]


class EndOffsets:
    """The changelog's ends as the broker answers a request sent after the caller asked.

    One request is in flight at a time; callers arriving meanwhile share the next one, so
    under load a round answers many lookups. A failed or slow round answers nothing (its
    callers forward the lookup).
    """

    def __init__(
        self, fetch: Callable[[set[TP]], Awaitable[Ends]], timeout: float = END_OFFSETS_TIMEOUT
    ) -> None:
        self._fetch = fetch
        self.timeout = timeout
        self._next: asyncio.Future[Ends] | None = None  # the round not yet sent
        self._wanted: set[TP] = set()
        self._rounds: asyncio.Task[None] | None = None
        self._failing = False

    async def after_now(self, tp: TP) -> int | None:
        """``tp``'s end, from a request sent after this call; None if it could not be read."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            self._wanted = set()
            if self._rounds is None:
                self._rounds = asyncio.create_task(self._run())
        self._wanted.add(tp)
        ends = await asyncio.shield(self._next)
        return ends.get(tp)

    async def _run(self) -> None:
        try:
            while (waiting := self._next) is not None:
                wanted, self._next = self._wanted, None
                waiting.set_result(await self._round(wanted))
        finally:
            self._rounds = None

    async def _round(self, wanted: set[TP]) -> Ends:
        try:
            ends = await asyncio.wait_for(self._fetch(wanted), self.timeout)
        except Exception as exc:  # the broker, the consumer thread: lookups forward instead
            if not self._failing:
                self._failing = True
                logger.warning("Standby reads forward: the changelog's end is unknown: %r", exc)
            return {}
        if self._failing:
            self._failing = False
            logger.info("Standby reads resume: the changelog's end is known again")
        return ends


@dataclass(frozen=True)
class StandbyRead:
    """A standby copy fresh enough to answer; ``value`` is None if it lacks the order."""

    value: bytes | None


class StandbyReads:
    """Reads of this worker's standby partitions within STANDBY_READ_MAX_LAG (None: never)."""

    def __init__(self, app: OrderApp, table: faust.Table, max_lag: int | None) -> None:
        self.app = app
        self.table = table
        self.store = PartitionStore(table)
        self.max_lag = max_lag
        self.ends = EndOffsets(lambda tps: end_offsets(app.batch_producer.client, tps))
        self._tps: dict[int, TP] = {}

    def _tp(self, partition: int) -> TP:
        tp = self._tps.get(partition)
        if tp is None:
            tp = self._tps[partition] = TP(self.table.changelog_topic.get_topic_name(), partition)
        return tp

    def _lag(self, tp: TP, end: int | None) -> int | None:
        """Changelog messages the standby copy lacks of those before ``end``; None: unknown."""
        if end is None or tp not in standby_partitions(self.app):
            return None
        applied = self.store.applied_offset(tp.partition)
        return None if applied is None else end - 1 - applied

    async def read(self, partition: int, key: bytes) -> StandbyRead | None:
        """The key's value in this worker's standby copy if that copy is fresh enough, else None."""
        max_lag = self.max_lag
        if max_lag is None:
            return None
        tp = self._tp(partition)
        if tp not in standby_partitions(self.app):
            return None
        known = self._lag(tp, fetched_end(self.app, tp))
        if known is None or known > max_lag:
            return None  # not a standby here, or behind already at the last fetch
        lag = self._lag(tp, await self.ends.after_now(tp))
        if lag is None or lag > max_lag:
            return None
        return StandbyRead(self.store.get(partition, key))
