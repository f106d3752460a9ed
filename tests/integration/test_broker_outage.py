"""A broker outage under a running worker: not ready, alive, quiet in the log, and back by itself.

The broker is one of this test's own (tests/private_stack.py), stopped and started again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from harness import Worker, eventually
from orderstream.order.generator import random_orders

from ..private_stack import PrivateStack
from .test_pipeline import publish, wait_stored

OUTAGE_SECONDS = 8


@pytest.fixture
async def own_broker(tmp_path: Path) -> AsyncIterator[PrivateStack]:
    stack = PrivateStack(tmp_path / "stack")
    await asyncio.to_thread(stack.kafka_up)
    try:
        yield stack
    finally:
        await asyncio.to_thread(stack.down)


async def readiness(http: aiohttp.ClientSession, worker: Worker) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{worker.url}/ready") as reply:
        return reply.status, await reply.json()


async def publish_to(brokers: str, topic: str, seed: int, count: int) -> set[str]:
    orders = list(random_orders(seed, count))
    producer = AIOKafkaProducer(bootstrap_servers=brokers, acks="all")
    await producer.start()
    try:
        await publish(producer, topic, orders)
    finally:
        await producer.stop()
    return {o.order_uid for o in orders}


async def test_broker_outage_fails_readiness_not_liveness_logs_once_and_ingest_resumes(
    start_worker: Any,
    pipeline_env: dict[str, str],
    http: aiohttp.ClientSession,
    own_broker: PrivateStack,
) -> None:
    worker = await start_worker(KAFKA_BROKERS=own_broker.kafka_brokers)
    topic = pipeline_env["KAFKA_TOPIC"]
    before = await publish_to(own_broker.kafka_brokers, topic, 53, 20)
    await wait_stored(pipeline_env["PG_URL"], before)

    async def ready() -> bool:
        status, body = await readiness(http, worker)
        return status == 200 and body["checks"]["kafka"]["ok"]

    await eventually(ready, timeout=60, what="ready before the outage")
    lines_before = len(worker.log().splitlines())

    await asyncio.to_thread(own_broker.kafka_stop)

    async def kafka_not_ready() -> Any:
        status, body = await readiness(http, worker)
        return status == 503 and not body["checks"]["kafka"]["ok"] and body

    body = await eventually(kafka_not_ready, timeout=15, what="/ready failing on Kafka")
    assert body["checks"]["kafka"]["detail"].startswith("Kafka does not answer (")
    assert own_broker.kafka_brokers not in str(body)  # no host or port on an open endpoint
    await asyncio.sleep(OUTAGE_SECONDS)
    async with http.get(f"{worker.url}/health") as reply:
        assert reply.status == 200  # liveness: restarting the worker would not bring Kafka back
    outage_lines = worker.log().splitlines()[lines_before:]
    errors = [line for line in outage_lines if "[ERROR]" in line]
    assert len(errors) <= 10, "\n".join(errors[:20])  # ~35 a second without the filter

    await asyncio.to_thread(own_broker.kafka_up)
    after = await publish_to(own_broker.kafka_brokers, topic, 59, 20)
    await wait_stored(pipeline_env["PG_URL"], before | after, timeout=90)
    await eventually(ready, timeout=60, what="ready after the outage")
    log = worker.log()
    assert log.count("Kafka unreachable") == 1
    assert log.count("Kafka is back") == 1
    assert worker.process is not None and worker.process.poll() is None
    # Stopped while its broker still runs (the fixture's teardown kills the broker first).
    assert await asyncio.to_thread(worker.stop) == 0
