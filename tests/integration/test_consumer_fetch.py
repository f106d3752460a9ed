"""Why the consumer thread fetches a copy of Faust's partition set (orderstream/consumer.py).

With a real broker and aiokafka's own fetcher, as Faust's consumer thread calls it: a fetch
given a set that empties while it waits (Faust pausing partitions in place) returns the
records of a partition it never asked for, and aiokafka's position moves past them. Faust
drops them as paused: a standby copy lost its changelog records so (test_scale.py's
standby-copies test). A fetch given a copy leaves them for the fetch that asks for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from harness import eventually

RECORDS = 5


@pytest.fixture
async def topic(kafka_brokers: str, unique_name: str) -> AsyncIterator[str]:
    name = f"fetch-{unique_name}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_brokers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])
        yield name
        await admin.delete_topics([name])
    finally:
        await admin.close()


@pytest.fixture
async def consumer(kafka_brokers: str, topic: str, producer: AIOKafkaProducer) -> Any:
    """A consumer of both partitions from the start; partition 1 holds RECORDS records,
    already fetched into aiokafka's buffer, partition 0 none yet."""
    for n in range(RECORDS):
        await producer.send_and_wait(topic, f"standby-{n}".encode(), partition=1)
    client = AIOKafkaConsumer(
        bootstrap_servers=kafka_brokers, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await client.start()
    try:
        active, standby = TopicPartition(topic, 0), TopicPartition(topic, 1)
        client.assign([active, standby])
        await client.seek_to_beginning(active, standby)

        async def buffered() -> bool:
            return standby in client._fetcher._records

        await eventually(buffered, timeout=30, interval=0.05, what="partition 1 fetched")
        yield client
    finally:
        await client.stop()


async def test_a_fetch_whose_set_empties_returns_partitions_never_asked_for(
    consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, topic: str
) -> None:
    active, standby = TopicPartition(topic, 0), TopicPartition(topic, 1)
    live = {active}  # Faust's live set, handed over as it is
    fetching = asyncio.create_task(consumer._fetcher.fetched_records(live, timeout=20))
    await asyncio.sleep(0.5)
    assert not fetching.done()  # waiting: nothing for partition 0
    live.discard(active)  # paused in place
    await producer.send_and_wait(topic, b"active", partition=0)
    records = await asyncio.wait_for(fetching, 20)

    assert len(records.get(standby, [])) == RECORDS  # never asked for; Faust drops them
    assert await consumer.position(standby) == RECORDS  # and reading went on past them


async def test_a_fetch_given_a_copy_leaves_the_others_for_their_own_fetch(
    consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, topic: str
) -> None:
    active, standby = TopicPartition(topic, 0), TopicPartition(topic, 1)
    live = {active}
    fetching = asyncio.create_task(consumer._fetcher.fetched_records(set(live), timeout=20))
    await asyncio.sleep(0.5)
    assert not fetching.done()
    live.discard(active)
    await producer.send_and_wait(topic, b"active", partition=0)
    records = await asyncio.wait_for(fetching, 20)

    assert set(records) == {active}
    assert await consumer.position(standby) == 0
    later = await consumer._fetcher.fetched_records({standby}, timeout=20)  # resumed
    assert [r.value for r in later[standby]] == [f"standby-{n}".encode() for n in range(RECORDS)]
