"""The negative cache's rule (cache/negative.py): a remembered miss never hides a write."""

from __future__ import annotations

import pytest

from orderstream.cache.negative import UnknownOrders

OWNED, OTHER = 1, 2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def unknown(clock: Clock) -> UnknownOrders:
    cache = UnknownOrders(3, 10.0, clock=clock)
    cache.assigned([OWNED])
    return cache


def miss(cache: UnknownOrders, uid: str, partition: int = OWNED) -> None:
    """A whole PostgreSQL read of ``uid`` that found no row."""
    ticket = cache.reading(partition, uid)
    if ticket is not None:
        cache.read(ticket, missing=True)


def test_a_miss_is_remembered_and_only_a_miss(unknown: UnknownOrders) -> None:
    assert not unknown.knows_missing(OWNED, "a")
    miss(unknown, "a")
    assert unknown.knows_missing(OWNED, "a")
    ticket = unknown.reading(OWNED, "b")
    assert ticket is not None
    unknown.read(ticket, missing=False)  # found, or PostgreSQL unavailable
    assert not unknown.knows_missing(OWNED, "b")


def test_only_partitions_whose_writes_this_worker_sees(unknown: UnknownOrders) -> None:
    assert unknown.reading(OTHER, "a") is None
    miss(unknown, "a", OTHER)
    assert not unknown.knows_missing(OTHER, "a")
    assert len(unknown) == 0


def test_bounded_least_recently_used_first(unknown: UnknownOrders) -> None:
    for uid in "abc":
        miss(unknown, uid)
    assert unknown.knows_missing(OWNED, "a")  # now the most recently used
    miss(unknown, "d")
    assert len(unknown) == 3
    assert not unknown.knows_missing(OWNED, "b")
    assert all(unknown.knows_missing(OWNED, uid) for uid in "acd")


def test_a_miss_expires(unknown: UnknownOrders, clock: Clock) -> None:
    miss(unknown, "a")
    clock.now += 9.9
    assert unknown.knows_missing(OWNED, "a")
    clock.now += 0.2
    assert not unknown.knows_missing(OWNED, "a")
    assert len(unknown) == 0


def test_storing_forgets_the_miss(unknown: UnknownOrders) -> None:
    miss(unknown, "a")
    miss(unknown, "b")
    with unknown.storing(["a"]):
        assert not unknown.knows_missing(OWNED, "a")
    assert not unknown.knows_missing(OWNED, "a")
    assert unknown.knows_missing(OWNED, "b")


def test_a_read_overlapping_a_whole_write_remembers_nothing(unknown: UnknownOrders) -> None:
    ticket = unknown.reading(OWNED, "a")
    assert ticket is not None
    with unknown.storing(["a"]):
        pass  # committed while the read was in flight: the read may have missed it
    unknown.read(ticket, missing=True)
    assert not unknown.knows_missing(OWNED, "a")


def test_a_read_ending_during_a_write_remembers_nothing(unknown: UnknownOrders) -> None:
    ticket = unknown.reading(OWNED, "a")
    assert ticket is not None
    with unknown.storing(["a"]):
        unknown.read(ticket, missing=True)
        assert not unknown.knows_missing(OWNED, "a")
    assert not unknown.knows_missing(OWNED, "a")


def test_a_read_beginning_during_a_write_remembers_nothing(unknown: UnknownOrders) -> None:
    with unknown.storing(["a"]):
        inside = unknown.reading(OWNED, "a")
        assert inside is not None
        miss(unknown, "a")  # a whole read inside the write: its commit may come next
        assert not unknown.knows_missing(OWNED, "a")
    unknown.read(inside, missing=True)
    assert not unknown.knows_missing(OWNED, "a")


def test_overlapping_writes_of_one_order(unknown: UnknownOrders) -> None:
    with unknown.storing(["a"]):
        with unknown.storing(["a"]):
            pass
        miss(unknown, "a")  # the outer write still runs
        assert not unknown.knows_missing(OWNED, "a")
    miss(unknown, "a")  # a read after both ended, that found no row: true, so remembered
    assert unknown.knows_missing(OWNED, "a")


def test_concurrent_reads_of_one_order(unknown: UnknownOrders) -> None:
    first = unknown.reading(OWNED, "a")
    with unknown.storing(["a"]):
        pass
    second = unknown.reading(OWNED, "a")  # began after the write ended
    assert first is not None and second is not None
    unknown.read(first, missing=True)
    assert not unknown.knows_missing(OWNED, "a")
    unknown.read(second, missing=True)
    assert unknown.knows_missing(OWNED, "a")


def test_a_rebalance_forgets_everything_and_every_read_in_flight(unknown: UnknownOrders) -> None:
    miss(unknown, "a")
    ticket = unknown.reading(OWNED, "b")
    assert ticket is not None
    unknown.revoked()
    assert not unknown.knows_missing(OWNED, "a")
    unknown.assigned([OWNED])
    unknown.read(ticket, missing=True)
    assert not unknown.knows_missing(OWNED, "b")
    assert len(unknown) == 0


@pytest.mark.parametrize(("size", "ttl"), [(0, 10.0), (10, 0.0)])
def test_off(size: int, ttl: float) -> None:
    cache = UnknownOrders(size, ttl)
    cache.assigned([OWNED])
    assert not cache.enabled
    assert cache.reading(OWNED, "a") is None
    with cache.storing(["a"]):
        pass
