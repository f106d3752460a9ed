"""A batch split by partition for its write connections (orderstream/write_groups.py)."""

from orderstream.write_groups import partition_groups


def test_a_partition_stays_in_one_group_and_groups_are_balanced() -> None:
    # (partition, n): partition 0 has 5 items, 1 has 4, 2 has 3, 3 has 3, 4 has 1
    items = [(p, n) for p, count in enumerate((5, 4, 3, 3, 1)) for n in range(count)]
    groups = partition_groups(items, lambda item: item[0], 2)
    assert len(groups) == 2
    assert sorted(len(group) for group in groups) == [8, 8]
    owners = [{p for p, _ in group} for group in groups]
    assert owners[0].isdisjoint(owners[1])
    assert sorted(item for group in groups for item in group) == sorted(items)
    for group in groups:  # a partition's items in their order
        for partition in {p for p, _ in group}:
            assert [n for p, n in group if p == partition] == sorted(
                n for p, n in group if p == partition
            )


def test_one_connection_keeps_the_batch_whole_and_in_order() -> None:
    items = [(3, 0), (1, 0), (3, 1), (2, 0)]
    assert partition_groups(items, lambda item: item[0], 1) == [items]


def test_no_more_groups_than_partitions_and_none_empty() -> None:
    items = [(7, n) for n in range(10)]
    assert partition_groups(items, lambda item: item[0], 4) == [items]
    assert partition_groups([], lambda item: 0, 4) == []
    assert partition_groups([], lambda item: 0, 1) == []
    two = partition_groups([(1, 0), (2, 0)], lambda item: item[0], 3)
    assert sorted(two) == [[(1, 0)], [(2, 0)]]
