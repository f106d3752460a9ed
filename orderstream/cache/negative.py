"""The negative cache: recent lookups that PostgreSQL answered "not found", kept for a while.

An unknown order_uid looked up again is answered 404 without PostgreSQL. A 404 must never hide
a stored order, so the rule is: a worker remembers, and answers from, misses only of the
partitions whose orders it stores itself (its active partitions of the orders topic; an
order is stored only by the owner of its order_uid's partition, agents.py), because only those
writes it sees. The store path brackets every upsert with ``storing(order_uids)``, which
drops their entries before the write and again after it, and a rebalance forgets everything.

The race: a lookup reads PostgreSQL (no row) while a batch storing that order commits. A read
takes a ticket (the key's generation) before it starts; ``storing`` bumps the generation of
every key being read, before and after the write, and no miss is remembered while the key is
being stored. So a miss is remembered only if the read began after the previous write of its
key had ended and no write of it began before the read ended: a remembered miss is a miss
that was true when it was remembered, and it is dropped as soon as a write of the key begins.

Bounded: at most ``size`` order_uids (least recently used evicted), each for ``ttl`` seconds.
The TTL bounds what the rule cannot see: a worker stalled past its Kafka session, whose
partitions another worker took over before this one noticed the rebalance, and an order written
to PostgreSQL by anything but the service's store path.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from faust.types import TP

if TYPE_CHECKING:
    from ..app import OrderApp


class Ticket:
    """One PostgreSQL read of an order_uid in flight: its key's generation when it began."""

    __slots__ = ("generation", "order_uid", "partition", "readers")

    def __init__(self, order_uid: str, partition: int) -> None:
        self.order_uid = order_uid
        self.partition = partition
        self.readers = 0
        self.generation = 0


class UnknownOrders:
    """Order_uids PostgreSQL recently did not have, per the rule in this module's docstring."""

    def __init__(
        self, size: int, ttl: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.size = size
        self.ttl = ttl
        self.enabled = size > 0 and ttl > 0
        self.clock = clock
        self.owned: frozenset[int] = frozenset()  # partitions whose writes this worker sees
        self._expiry: OrderedDict[str, float] = OrderedDict()  # order_uid -> when it expires
        self._slots: dict[str, Ticket] = {}
        self._storing: dict[str, int] = {}  # order_uid -> writes in progress

    def __len__(self) -> int:
        return len(self._expiry)

    # --- lookups --------------------------------------------------------------------------

    def knows_missing(self, partition: int, order_uid: str) -> bool:
        """True if ``order_uid`` is a remembered miss: answer 404 without PostgreSQL."""
        if partition not in self.owned:
            return False
        expires = self._expiry.get(order_uid)
        if expires is None:
            return False
        if expires <= self.clock():
            del self._expiry[order_uid]
            return False
        self._expiry.move_to_end(order_uid)
        return True

    def reading(self, partition: int, order_uid: str) -> tuple[Ticket, int] | None:
        """Take a ticket before reading PostgreSQL; None when a miss would not be remembered.

        Give it back with ``read`` once the read has ended, whatever its outcome.
        """
        if not self.enabled or partition not in self.owned:
            return None
        slot = self._slots.get(order_uid)
        if slot is None:
            slot = self._slots[order_uid] = Ticket(order_uid, partition)
        slot.readers += 1
        return slot, slot.generation

    def read(self, ticket: tuple[Ticket, int], *, missing: bool) -> None:
        """The read of ``ticket`` ended; remember the miss if nothing could have changed it."""
        slot, generation = ticket
        slot.readers -= 1
        if slot.readers == 0:
            del self._slots[slot.order_uid]
        if (
            missing
            and slot.generation == generation
            and slot.order_uid not in self._storing
            and slot.partition in self.owned
        ):
            self._expiry[slot.order_uid] = self.clock() + self.ttl
            self._expiry.move_to_end(slot.order_uid)
            while len(self._expiry) > self.size:
                self._expiry.popitem(last=False)

    # --- the store path and rebalances ----------------------------------------------------

    @contextmanager
    def storing(self, order_uids: Collection[str]) -> Iterator[None]:
        """Bracket a write of these orders to PostgreSQL (see the module's docstring)."""
        if not self.enabled or not order_uids:
            yield
            return
        storing = self._storing
        for uid in order_uids:
            storing[uid] = storing.get(uid, 0) + 1
        self._forget(order_uids)
        try:
            yield
        finally:
            for uid in order_uids:
                left = storing[uid] - 1
                if left:
                    storing[uid] = left
                else:
                    del storing[uid]
            self._forget(order_uids)

    def _forget(self, order_uids: Iterable[str]) -> None:
        expiry, slots = self._expiry, self._slots
        for uid in order_uids:
            expiry.pop(uid, None)
            slot = slots.get(uid)
            if slot is not None:
                slot.generation += 1

    def assigned(self, partitions: Iterable[int]) -> None:
        """The orders topic's partitions this worker now stores (after a rebalance)."""
        self.forget_all()
        self.owned = frozenset(partitions)

    def revoked(self) -> None:
        """A rebalance began: another worker may store any partition from now on."""
        self.owned = frozenset()
        self.forget_all()

    def forget_all(self) -> None:
        self._expiry.clear()
        for slot in self._slots.values():
            slot.generation += 1


def install(app: OrderApp) -> UnknownOrders:
    """The app's negative cache, told of every rebalance (NEGATIVE_CACHE_SIZE, _TTL)."""
    settings = app.settings
    unknown = UnknownOrders(settings.negative_cache_size, settings.negative_cache_ttl)
    if not unknown.enabled:
        return unknown
    orders_topic = app.orders_topic.get_topic_name()

    async def revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        unknown.revoked()

    async def assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        unknown.assigned(tp.partition for tp in assigned if tp.topic == orders_topic)

    app.on_partitions_revoked.connect(revoked)  # type: ignore[arg-type]
    app.on_partitions_assigned.connect(assigned)  # type: ignore[arg-type]
    return unknown
