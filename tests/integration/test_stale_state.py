"""Local table files that no longer match Kafka never stop the worker (issue 10, item 1).

Each test keeps a worker's data directory and changes Kafka under it: the broker's data wiped,
the group id changed, the internal topics deleted. Before, every start then died in table
recovery with ConsistencyError ("persisted offset ... is higher than ... highwater"). Now the
worker becomes ready and serves every stored order: from PostgreSQL while the cache is rebuilt,
from the cache after.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from harness import Worker, eventually
from orderstream.order.generator import random_orders
from orderstream.order.records import Order, encode_order

from ..private_stack import PrivateStack
from ..unit.test_rocksdb_options import rocksdb_options_file
from .test_pipeline import lookup, publish, served_from

DISCARDED = "Discarding the local files of cache partitions"
MIB = 1024 * 1024


async def ready(http: aiohttp.ClientSession, worker: Worker) -> None:
    async def answers_200() -> bool:
        async with http.get(f"{worker.url}/ready") as reply:
            return reply.status == 200

    await eventually(answers_200, timeout=90, interval=0.2, what="/ready 200")


async def serves_every_order(
    http: aiohttp.ClientSession, worker: Worker, orders: list[Order]
) -> None:
    """Ready, every order answered at once (from either place), then all from the cache."""
    await ready(http, worker)
    for order in orders:
        status, headers, body = await lookup(http, worker, order.order_uid)
        assert status == 200 and headers["X-Source"] in ("db", "cache"), (status, headers)
        assert body == encode_order(order)
    for order in orders:
        body = await eventually(
            functools.partial(served_from, http, worker, order.order_uid, "cache"),
            timeout=60,
            what=f"{order.order_uid} cached again",
        )
        assert body == encode_order(order)


async def cache_orders(
    start_worker: Any,
    http: aiohttp.ClientSession,
    brokers: str,
    topic: str,
    orders: list[Order],
    name: str,
    **env: str,
) -> Worker:
    """Start a worker, publish ``orders`` and wait until all are cached; then stop it."""
    worker = await start_worker(name, KAFKA_BROKERS=brokers, **env)
    producer = AIOKafkaProducer(bootstrap_servers=brokers, acks="all")
    await producer.start()
    try:
        await publish(producer, topic, orders)
    finally:
        await producer.stop()
    for order in orders:
        await eventually(
            functools.partial(served_from, http, worker, order.order_uid, "cache"),
            timeout=60,
            what=f"{order.order_uid} cached",
        )
    assert worker.stop() == 0
    return worker


@pytest.fixture
async def own_broker(tmp_path: Path) -> AsyncIterator[PrivateStack]:
    stack = PrivateStack(tmp_path / "stack")
    await asyncio.to_thread(stack.kafka_up)
    try:
        yield stack
    finally:
        await asyncio.to_thread(stack.down)


async def test_a_wiped_kafka_under_kept_table_files_is_rebuilt_not_fatal(
    own_broker: PrivateStack,
    start_worker: Any,
    pipeline_env: dict[str, str],
    http: aiohttp.ClientSession,
) -> None:
    # (own_broker first: it is torn down after the workers.)
    orders = list(random_orders(101, 24))
    brokers = own_broker.kafka_brokers
    await cache_orders(start_worker, http, brokers, pipeline_env["KAFKA_TOPIC"], orders, "kept")

    await asyncio.to_thread(own_broker.kafka_wipe)  # a new, empty cluster on the same port
    await asyncio.to_thread(own_broker.kafka_up)
    restarted = await start_worker("kept", KAFKA_BROKERS=brokers)
    await serves_every_order(http, restarted, orders)
    assert restarted.log().count(DISCARDED) == 1, restarted.log_tail()
    assert "ConsistencyError" not in restarted.log()


async def test_another_group_id_on_the_same_data_dir_starts_on_its_own_files(
    start_worker: Any,
    pipeline_env: dict[str, str],
    http: aiohttp.ClientSession,
    kafka_brokers: str,
    tmp_path: Path,
) -> None:
    orders = list(random_orders(102, 24))
    group = pipeline_env["KAFKA_GROUP_ID"]
    await cache_orders(
        start_worker,
        http,
        kafka_brokers,
        pipeline_env["KAFKA_TOPIC"],
        orders,
        "shared-dir",
        ROCKSDB_WRITE_BUFFER_MB="3",
        ROCKSDB_BLOCK_CACHE_MB="5",
        ROCKSDB_MAX_WAL_MB="7",
    )
    restarted = await start_worker("shared-dir", KAFKA_GROUP_ID=f"{group}-renamed")
    await serves_every_order(http, restarted, orders)

    # Each group has files of its own (DATA_DIR/<group>), opened with the ROCKSDB_* settings.
    tables = tmp_path / "data-shared-dir" / group / "v1" / "tables"
    assert (tmp_path / "data-shared-dir" / f"{group}-renamed" / "v1" / "tables").is_dir()
    partitions = sorted(tables.glob("order-cache-*.db"))
    assert partitions
    for partition in partitions:
        options = rocksdb_options_file(partition)
        assert int(options["write_buffer_size"]) == 3 * MIB
        assert int(options["max_total_wal_size"]) == 7 * MIB


async def test_deleted_internal_topics_under_kept_table_files_are_rebuilt_not_fatal(
    start_worker: Any, pipeline_env: dict[str, str], http: aiohttp.ClientSession, kafka_brokers: str
) -> None:
    orders = list(random_orders(103, 24))
    group = pipeline_env["KAFKA_GROUP_ID"]
    await cache_orders(
        start_worker, http, kafka_brokers, pipeline_env["KAFKA_TOPIC"], orders, "kept"
    )

    internal = [f"{group}-order-cache-changelog", f"{group}-order-cache-updates"]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_brokers)
    await admin.start()
    try:
        await admin.delete_topics(internal)

        async def gone() -> bool:
            return not set(internal) & set(await admin.list_topics())

        await eventually(gone, timeout=30, what="internal topics deleted")
    finally:
        await admin.close()

    restarted = await start_worker("kept")
    await serves_every_order(http, restarted, orders)
    assert restarted.log().count(DISCARDED) == 1, restarted.log_tail()
