"""A batch split by partition into groups of about equal size, one per write connection.

Every accepted order is on the partition its order_uid hashes to, so groups made of whole
partitions share no order_uid: written at once, each in its own transaction, they can neither
deadlock nor reorder one another, and each partition's orders are still written in order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def partition_groups(items: Sequence[T], partition: Callable[[T], int], most: int) -> list[list[T]]:
    """Split ``items`` into at most ``most`` groups, a partition's items all in one group, in
    their order; the largest partitions are placed first, each in the smallest group so far.

    No group is empty: fewer partitions than ``most`` give fewer groups, no items none.
    """
    if most == 1:
        return [list(items)] if items else []
    by_partition: dict[int, list[T]] = {}
    for item in items:
        by_partition.setdefault(partition(item), []).append(item)
    groups: list[list[T]] = [[] for _ in range(min(most, len(by_partition)))]
    for _, members in sorted(by_partition.items(), key=lambda entry: (-len(entry[1]), entry[0])):
        min(groups, key=len).extend(members)
    return groups
