"""No single message can stop ingest: messages at the broker's real size limit.

The broker accepts a message up to its limit (message.max.bytes); publishing it again adds
headers. A dead letter that no longer fits goes as a bounded stub, a forwarded order goes
without its original headers, and the orders after them are stored as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from orderstream.order.generator import random_orders
from orderstream.order.partitioning import partition_of
from orderstream.order.records import order_from_dict

from .test_pipeline import dead_letters, lookup, publish, wait_stored

PARTITIONS = 4
ORIGINAL_HEADERS = [("x-big-header", b"h" * 2000)]


async def largest_value_accepted(
    producer: AIOKafkaProducer, topic: str, key: bytes, headers: list[tuple[str, bytes]]
) -> int:
    """The largest value, with this key and these headers, that the broker takes on ``topic``."""
    low, high = 900_000, 1_100_000  # the broker's default limit is 1,048,588 bytes a batch
    while high - low > 1:
        size = (low + high) // 2
        try:
            await producer.send_and_wait(topic, b"p" * size, key=key, headers=headers)
            low = size
        except MessageSizeTooLargeError:
            high = size
    return low


def large_valid_order(order_dict: Callable[..., dict[str, Any]], uid: str, size: int) -> bytes:
    """A valid order of exactly ``size`` bytes: 800 long items and an ignored padding field."""
    data = order_dict({"order_uid": uid})
    item = {
        **data["items"][0],
        "name": "n" * 255,
        "brand": "b" * 255,
        "rid": "r" * 255,
        "price": 100,
        "sale": 0,
        "total_price": 100,
    }
    data["items"] = [item] * 800
    payment = data["payment"]
    payment["goods_total"] = 100 * 800
    payment["amount"] = payment["goods_total"] + payment["delivery_cost"] + payment["custom_fee"]
    data["padding"] = ""
    data["padding"] = "z" * (size - len(orjson.dumps(data)))
    raw = orjson.dumps(data)
    assert len(raw) == size
    order_from_dict(orjson.loads(raw))  # valid
    return raw


async def test_messages_at_the_broker_limit_are_dead_lettered_or_forwarded_and_ingest_goes_on(
    start_worker: Any,
    pipeline_env: dict[str, str],
    kafka_brokers: str,
    order_dict: Callable[..., dict[str, Any]],
    http: aiohttp.ClientSession,
) -> None:
    worker = await start_worker()
    topic = pipeline_env["KAFKA_TOPIC"]
    probe = f"{topic}-probe"  # same broker defaults as the orders topic, never consumed
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_brokers, acks="all", max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    try:
        # 1. A message the old producer limit (1,000,000 bytes) refused to dead-letter.
        big = b"x" * 1_040_000
        await producer.send_and_wait(topic, big, key=b"big")
        # 2. One at the broker's limit: its dead letter, with headers added, is too large.
        edge_size = await largest_value_accepted(producer, probe, b"edge", [])
        edge = b"y" * edge_size
        await producer.send_and_wait(topic, edge, key=b"edge")
        # 3. A valid order at the limit with headers, on another partition than its own:
        #    forwarded with its original headers it no longer fits.
        uid = "large-valid-order"
        own = partition_of(uid.encode(), PARTITIONS)
        size = await largest_value_accepted(producer, probe, uid.encode(), ORIGINAL_HEADERS)
        large = large_valid_order(order_dict, uid, size)
        await producer.send_and_wait(
            topic,
            large,
            key=uid.encode(),
            partition=(own + 1) % PARTITIONS,
            headers=ORIGINAL_HEADERS,
        )
    finally:
        await producer.stop()
    # 4. Ordinary orders after all of them.
    after = list(random_orders(47, 20))
    plain = AIOKafkaProducer(bootstrap_servers=kafka_brokers, acks="all")
    await plain.start()
    try:
        await publish(plain, topic, after)
    finally:
        await plain.stop()

    await wait_stored(pipeline_env["PG_URL"], {o.order_uid for o in after} | {uid})
    status, _, body = await lookup(http, worker, uid, "?nocache=1")
    assert status == 200 and orjson.loads(body)["order_uid"] == uid
    assert len(orjson.loads(body)["items"]) == 800

    letters = {
        letter.key: letter
        for letter in await dead_letters(pipeline_env["KAFKA_BROKERS"], f"{topic}.dlq", 2)
    }
    assert set(letters) == {b"big", b"edge"}
    assert letters[b"big"].value == big  # it fits: published whole
    assert "x-truncated" not in dict(letters[b"big"].headers)
    stub = {name: value.decode() for name, value in letters[b"edge"].headers}
    assert stub["x-error-reason"] == "not_json"
    assert stub["x-truncated"] == "true"
    assert int(stub["x-original-size"]) > edge_size
    assert stub["x-source-topic"] == topic and int(stub["x-source-offset"]) >= 0
    assert letters[b"edge"].value == edge[:1024]
    assert worker.process is not None and worker.process.poll() is None
    log = worker.log()
    assert "Traceback" not in log
    assert "publishing" in log  # the shrink was logged
