"""A real 3-broker KRaft cluster (stack.sh cluster-up): topics replicated, a broker death survived.

The cluster is the test's own (tests/private_stack.py), on free loopback ports; PostgreSQL is
the shared one. Every topic of the cluster has 3 replicas and min.insync.replicas=2, and
producers write with acks=all, so an acknowledged order is on two brokers at least.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from harness import Worker, eventually
from orderstream.order.generator import random_orders
from orderstream.order.records import encode_order
from orderstream.topics import describe_when_ready, ensure_topics

from ..private_stack import PrivateCluster
from .test_pipeline import lookup, row_counts, served_from, stored_uids

PARTITIONS = 6  # two partitions led by each broker
STREAM = 3000  # orders in the stream a broker dies in the middle of
KNOWN = 20  # orders stored before the stream, looked up all along
LOOKUP_TIMEOUT = 5.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateCluster]:
    cluster = PrivateCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()


async def describe(brokers: str, names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each topic's partitions (leader, replicas, isr), once the answering broker knows them all."""
    admin = AIOKafkaAdminClient(bootstrap_servers=brokers)
    await admin.start()
    try:
        return {
            name: topic["partitions"]
            for name, topic in (await describe_when_ready(admin, names)).items()
        }
    finally:
        await admin.close()


async def created(brokers: str, names: set[str]) -> bool:
    """Whether every topic of ``names`` exists (listed: a metadata request naming a missing
    topic may create it, where the broker allows that)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=brokers)
    await admin.start()
    try:
        return names <= set(await admin.list_topics())
    finally:
        await admin.close()


async def message_count(brokers: str, topic: str, partitions: int) -> int:
    """Messages ever written to ``topic``: the sum of its partitions' end offsets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=brokers, group_id=None)
    await consumer.start()
    try:
        offsets = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return sum(offsets.values())
    finally:
        await consumer.stop()


def service_topics(topic: str, group: str) -> set[str]:
    """Every topic a worker creates: ours, then Faust's changelog and assignor topics."""
    return {
        topic,
        f"{topic}.dlq",
        f"{group}-order-cache-updates",
        f"{group}-order-cache-changelog",
        f"{group}-__assignor-__leader",
    }


async def replication_of(brokers: str, names: set[str]) -> dict[str, set[tuple[int, int]]]:
    """Each topic's (replicas, in-sync replicas) counts over its partitions."""
    return {
        name: {(len(p["replicas"]), len(p["isr"])) for p in partitions}
        for name, partitions in (await describe(brokers, sorted(names))).items()
    }


async def test_every_topic_gets_the_brokers_default_replication_factor_when_it_is_not_set(
    cluster: PrivateCluster, kafka_brokers: str, start_worker: Any, pipeline_env: dict[str, str]
) -> None:
    topics = service_topics(pipeline_env["KAFKA_TOPIC"], pipeline_env["KAFKA_GROUP_ID"])
    await start_worker(KAFKA_BROKERS=cluster.kafka_brokers, KAFKA_PARTITIONS=str(PARTITIONS))
    await eventually(
        functools.partial(created, cluster.kafka_brokers, topics),
        timeout=60,
        what="the worker's topics created",
    )
    # The cluster's default.replication.factor is 3: Faust's own topics get it too.
    assert await replication_of(cluster.kafka_brokers, topics) == {
        name: {(3, 3)} for name in topics
    }
    # The single local broker's default is 1, as before.
    assert await ensure_topics(kafka_brokers, [f"single-{uuid4().hex[:12]}"], partitions=1) == 1


async def test_an_existing_topic_with_fewer_replicas_is_named_in_a_warning(
    cluster: PrivateCluster, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"unreplicated-{uuid4().hex[:12]}"
    assert await ensure_topics(cluster.kafka_brokers, [name], partitions=1, replication=1) == 1
    with caplog.at_level(logging.WARNING, logger="orderstream.topics"):
        assert await ensure_topics(cluster.kafka_brokers, [name], partitions=1) == 3
    assert f"Topic {name} has 1 replicas, fewer than the 3 of new topics" in caplog.text
    assert [len(p["replicas"]) for p in (await describe(cluster.kafka_brokers, [name]))[name]] == [
        1
    ]  # kept as it is


async def topic_config(brokers: str, topic: str, name: str) -> str:
    """The value of topic config ``name`` (the broker's default unless the topic overrides it)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=brokers)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {name: None})]
        )
    finally:
        await admin.close()
    entries = responses[0].to_object()["resources"][0]["config_entries"]
    return str(next(entry["config_value"] for entry in entries if entry["config_names"] == name))


async def test_a_broker_killed_mid_stream_loses_nothing_and_stops_nothing(
    cluster: PrivateCluster,
    start_worker: Any,
    pipeline_env: dict[str, str],
    clean_database: str,
    http: aiohttp.ClientSession,
) -> None:
    brokers = cluster.kafka_brokers
    topic, group = pipeline_env["KAFKA_TOPIC"], pipeline_env["KAFKA_GROUP_ID"]
    worker = await start_worker(
        KAFKA_BROKERS=brokers, KAFKA_REPLICATION_FACTOR="3", KAFKA_PARTITIONS=str(PARTITIONS)
    )

    orders = list(random_orders(None, KNOWN + STREAM))
    known, stream = orders[:KNOWN], orders[KNOWN:]
    answers: list[tuple[float, int]] = []
    polling: asyncio.Task[None] | None = None
    producer = AIOKafkaProducer(bootstrap_servers=brokers, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for order in known:
            await producer.send(topic, encode_order(order), key=order.order_uid.encode())
        await producer.flush()
        for order in known:
            await eventually(
                functools.partial(served_from, http, worker, order.order_uid, "cache"),
                timeout=60,
                what=f"order {order.order_uid} served from the cache",
            )

        # Every topic the service created, Faust's own included, has 3 in-sync replicas,
        # and an acks=all write needs 2 of them.
        topics = service_topics(topic, group)
        assert await created(brokers, topics)
        assert await replication_of(brokers, topics) == {name: {(3, 3)} for name in topics}
        assert await topic_config(brokers, topic, "min.insync.replicas") == "2"

        # Lookups of the known orders all along, by a client that waits for nothing.
        polling = asyncio.create_task(
            poll_lookups(http, worker, [o.order_uid for o in known], answers)
        )
        # The victim leads some partitions of the orders topic.
        victim = (await describe(brokers, [topic]))[topic][0]["leader"]
        half = len(stream) // 2
        for order in stream[:half]:
            await producer.send(topic, encode_order(order), key=order.order_uid.encode())
        killed_at = time.monotonic()
        cluster.kill(victim)
        for order in stream[half:]:
            await producer.send(topic, encode_order(order), key=order.order_uid.encode())
        await producer.flush()  # acks=all: each on 2 brokers at least, the victim aside
        sent = {order.order_uid for order in orders}

        async def all_stored() -> Any:
            return sent <= await stored_uids(clean_database) or None

        await eventually(
            all_stored,
            timeout=60,
            interval=0.5,
            what=f"{len(sent)} orders in PostgreSQL after broker {victim} died",
        )
        stored_after = time.monotonic() - killed_at
    finally:
        if polling is not None:
            polling.cancel()
        await producer.stop()

    after_kill = [status for at, status in answers if at >= killed_at]
    print(
        f"broker {victim} killed; all {len(sent)} orders stored {stored_after:.1f} s later; "
        f"{len(after_kill)} lookups since the kill, statuses {sorted(set(after_kill))}"
    )

    assert await stored_uids(clean_database) == sent
    assert (await row_counts(clean_database))["orders"] == len(sent)  # one row each
    assert await message_count(brokers, f"{topic}.dlq", PARTITIONS) == 0
    assert after_kill and set(status for _, status in answers) == {200}, answers
    assert worker.process is not None and worker.process.poll() is None, worker.log_tail()


async def poll_lookups(
    http: aiohttp.ClientSession, worker: Worker, uids: list[str], answers: list[tuple[float, int]]
) -> None:
    """Look the orders up one after another until cancelled; a failed request counts as 0,
    and so does one that takes longer than LOOKUP_TIMEOUT (it is not answering)."""
    while True:
        for uid in uids:
            try:
                async with asyncio.timeout(LOOKUP_TIMEOUT):
                    status, _, _ = await lookup(http, worker, uid)
            except (TimeoutError, aiohttp.ClientError):
                status = 0
            answers.append((time.monotonic(), status))
            await asyncio.sleep(0.05)
