"""The broker the other tests rely on is a real Kafka: topics, partitions, keys, consumer groups."""

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

PARTITIONS = 3
MESSAGES = 30
DEADLINE_SECONDS = 30.0


@pytest.fixture
async def topic(kafka_brokers: str, unique_name: str) -> Any:
    """A new topic with PARTITIONS partitions, once the broker reports them all; deleted after."""
    name = f"orders-{unique_name}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_brokers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])
        deadline = asyncio.get_running_loop().time() + DEADLINE_SECONDS
        while True:
            [described] = await admin.describe_topics([name])
            if described["error_code"] == 0 and len(described["partitions"]) == PARTITIONS:
                break
            assert asyncio.get_running_loop().time() < deadline, f"no topic yet: {described}"
            await asyncio.sleep(0.1)  # poll interval
        yield name
        await admin.delete_topics([name])
    finally:
        await admin.close()


async def consume(brokers: str, topic: str, group: str, count: int) -> list[Any]:
    """Up to ``count`` messages from the start of ``topic``, read by ``group`` until a deadline."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=brokers,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        received: list[Any] = []
        deadline = asyncio.get_running_loop().time() + DEADLINE_SECONDS
        while len(received) < count and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            received.extend(message for batch in batches.values() for message in batch)
        return received
    finally:
        await consumer.stop()


async def test_produce_consume_round_trip(
    kafka_brokers: str, producer: AIOKafkaProducer, topic: str, unique_name: str
) -> None:
    assert producer.client.cluster.brokers(), "no broker answered ApiVersions/Metadata"

    sent = {}
    for n in range(MESSAGES):
        key, value = f"order-{n}".encode(), f'{{"n": {n}}}'.encode()
        metadata = await producer.send_and_wait(topic, value=value, key=key)
        sent[key] = (value, metadata.partition)
    assert {partition for _, partition in sent.values()} == set(range(PARTITIONS))
    assert await producer.partitions_for(topic) == set(range(PARTITIONS))

    received = await consume(kafka_brokers, topic, f"group-{unique_name}", MESSAGES)
    assert {m.key: (m.value, m.partition) for m in received} == sent
    assert len(received) == MESSAGES  # each exactly once
