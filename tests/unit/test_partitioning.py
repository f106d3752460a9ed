"""Our murmur2 and partition choice are Kafka's (as aiokafka implements them)."""

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from orderstream.order.partitioning import murmur2, partition_of


def test_murmur2_is_aiokafkas_for_every_length_and_byte() -> None:
    rng = random.Random(3)
    keys = [rng.randbytes(length) for length in range(70) for _ in range(50)]
    keys += [b"b563feb7b2b84b6test", "заказ-ü".encode(), bytes(range(256))]

    assert [murmur2(key) for key in keys] == [aiokafka_murmur2(key) for key in keys]


def test_partition_is_the_one_kafkas_default_partitioner_picks() -> None:
    rng = random.Random(5)
    for partitions in (1, 3, 8, 12):
        every = list(range(partitions))
        for key in (rng.randbytes(rng.randrange(1, 40)) for _ in range(300)):
            assert partition_of(key, partitions) == DefaultPartitioner()(key, every, every)
