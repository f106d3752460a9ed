"""Which partition an order_uid belongs to: the one Kafka's default partitioner picks.

The producer, the changelog, the cache and the lookup routing must all agree, so every part
of the service asks this module. murmur2 is Kafka's (Java client's Utils.murmur2), written
for speed: it runs for every order stored and every lookup, where aiokafka's pure-Python
version showed in profiles. The unit tests pin it to aiokafka's.
"""

from __future__ import annotations

import struct

SEED = 0x9747B28C
M = 0x5BD1E995
MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of ``data``, as an unsigned 32-bit integer."""
    length = len(data)
    h = SEED ^ length
    words = length >> 2
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * M) & MASK
        k = ((k ^ (k >> 24)) * M) & MASK
        h = ((h * M) & MASK) ^ k
    rest = length & 3
    if rest:
        tail = length - rest
        if rest == 3:
            h ^= data[tail + 2] << 16
        if rest >= 2:
            h ^= data[tail + 1] << 8
        h = ((h ^ data[tail]) * M) & MASK
    h = ((h ^ (h >> 13)) * M) & MASK
    return h ^ (h >> 15)


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives this key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
