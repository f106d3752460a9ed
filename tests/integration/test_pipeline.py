"""End to end: worker processes against the real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from harness import Worker, admin_execute, eventually, orderstream_command
from orderstream.order.generator import random_order, random_orders
from orderstream.order.records import Order, encode_order, order_from_dict
from orderstream.repo import OrderRepository
from orderstream.shutdown import EXIT_UNFINISHED

from ..private_stack import PrivateStack

MODEL_UID = "b563feb7b2b84b6test"


async def lookup(
    http: aiohttp.ClientSession, worker: Worker, uid: str, query: str = ""
) -> tuple[int, dict[str, str], bytes]:
    async with http.get(f"{worker.url}/order/{uid}{query}") as reply:
        return reply.status, dict(reply.headers), await reply.read()


async def served_from(
    http: aiohttp.ClientSession, worker: Worker, uid: str, source: str
) -> bytes | None:
    """The body when the lookup answers 200 from ``source``, else None (for polling)."""
    status, headers, body = await lookup(http, worker, uid)
    return body if status == 200 and headers.get("X-Source") == source else None


async def stored_uids(database_url: str) -> set[str]:
    conn = await asyncpg.connect(database_url)
    try:
        return {row[0] for row in await conn.fetch("SELECT order_uid FROM orders")}
    finally:
        await conn.close()


async def row_counts(database_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        return {
            table: await conn.fetchval(f"SELECT count(*) FROM {table}")
            for table in ("orders", "deliveries", "payments", "items")
        }
    finally:
        await conn.close()


async def wait_stored(database_url: str, uids: set[str], timeout: float = 60) -> None:
    async def all_there() -> Any:
        return uids <= await stored_uids(database_url) or None

    await eventually(all_there, timeout=timeout, what=f"{len(uids)} orders in PostgreSQL")


async def publish(
    producer: AIOKafkaProducer,
    topic: str,
    orders: list[Order],
    key: Callable[[Order], bytes | None] = lambda o: o.order_uid.encode(),
) -> None:
    for order in orders:
        await producer.send(topic, encode_order(order), key=key(order))
    await producer.flush()


async def test_sent_order_is_stored_cached_and_served(
    start_worker: Any, pipeline_env: dict[str, str], http: aiohttp.ClientSession, model_json: bytes
) -> None:
    worker = await start_worker()
    orderstream_command("send", pipeline_env["KAFKA_TOPIC"], model_json.decode(), env=pipeline_env)
    await wait_stored(pipeline_env["PG_URL"], {MODEL_UID})

    cached = await eventually(
        lambda: served_from(http, worker, MODEL_UID, "cache"),
        what="model.json served from the cache",
    )
    assert orderstream_equal(cached, model_json)

    status, headers, body = await lookup(http, worker, MODEL_UID, "?nocache=1")
    assert (status, headers["X-Source"], body) == (200, "db", cached)
    assert headers["Content-Type"].startswith("application/json")
    assert float(headers["X-Duration-ms"]) >= 0

    status, headers, body = await lookup(http, worker, "no-such-order")
    assert status == 404
    assert orjson.loads(body) == {"error": "order not found", "order_uid": "no-such-order"}

    status, headers, body = await lookup(http, worker, "bad%20id!")
    assert status == 400
    assert "invalid order_uid" in orjson.loads(body)["error"]

    for path in ("/order/", "/order"):
        async with http.get(f"{worker.url}{path}") as reply:
            assert (reply.status, reply.content_type) == (400, "application/json"), path
            assert "order_uid is required" in (await reply.json())["error"]


def orderstream_equal(body: bytes, expected: bytes) -> bool:
    """Same JSON, and the same key order at every level."""
    return orjson.dumps(orjson.loads(body)) == orjson.dumps(orjson.loads(expected))


async def dead_letters(brokers: str, topic: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=brokers, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list[Any] = []
    try:

        async def collected() -> Any:
            batches = await consumer.getmany(timeout_ms=500)
            found.extend(m for messages in batches.values() for m in messages)
            return len(found) >= count or None

        await eventually(collected, timeout=60, what=f"{count} dead letters")
    finally:
        await consumer.stop()
    return found


async def test_bad_messages_go_to_the_dead_letter_topic_with_their_reason(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    order_dict: Callable[..., dict[str, Any]],
) -> None:
    await start_worker()
    topic = pipeline_env["KAFKA_TOPIC"]
    good = list(random_orders(7, 4))
    wrong_sum = orjson.dumps(order_dict({"order_uid": "wrongsum", "payment.amount": 1}))
    now = datetime.now(UTC)
    from_the_future = orjson.dumps(
        order_dict(
            {"order_uid": "fromthefuture", "date_created": (now + timedelta(hours=1)).isoformat()}
        )
    )
    bad = {
        b"not json at all": "not_json",
        orjson.dumps(
            order_dict({"sm_id": "ninety-nine", "order_uid": "wrongtype"})
        ): "not_an_order",
        wrong_sum: "invalid",
        from_the_future: "invalid",
    }
    # Within MAX_CLOCK_SKEW (default 300 s) of this clock: a producer's clock a little ahead.
    slightly_ahead = order_from_dict(
        order_dict(
            {
                "order_uid": "slightlyahead",
                "date_created": (now + timedelta(seconds=60)).isoformat(),
            }
        )
    )
    good.append(slightly_ahead)
    # Valid orders around the bad ones, keyed every way a producer might: by id, by nothing,
    # by something else.
    await publish(producer, topic, good[:2])
    for raw in bad:
        await producer.send(topic, raw, key=b"bad-key")
    await publish(producer, topic, good[2:3], key=lambda o: None)
    await publish(producer, topic, good[3:], key=lambda o: b"not-the-order-uid")

    await wait_stored(pipeline_env["PG_URL"], {o.order_uid for o in good})
    letters = await dead_letters(pipeline_env["KAFKA_BROKERS"], f"{topic}.dlq", len(bad))
    assert len(letters) == len(bad)
    for letter in letters:
        headers = {name: value.decode() for name, value in letter.headers}
        assert headers["x-error-reason"] == bad[letter.value]
        assert headers["x-source-topic"] == topic
        assert int(headers["x-source-offset"]) >= 0
        assert letter.key == b"bad-key"
    errors = {letter.value: dict(letter.headers)["x-error"].decode() for letter in letters}
    assert "sm_id" in errors[next(raw for raw, reason in bad.items() if reason == "not_an_order")]
    assert "payment.amount" in errors[wrong_sum]
    assert errors[from_the_future].startswith("invalid: date_created: lies in the future")
    assert await stored_uids(pipeline_env["PG_URL"]) == {o.order_uid for o in good}


async def test_resent_order_is_stored_once_and_a_changed_resend_replaces_it(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
) -> None:
    worker = await start_worker()
    original = random_order(random.Random(3))
    await publish(producer, pipeline_env["KAFKA_TOPIC"], [original] * 3)
    changed_dict = orjson.loads(encode_order(original))
    changed_dict["items"] = changed_dict["items"][:1]
    item = changed_dict["items"][0]
    changed_dict["payment"]["goods_total"] = item["total_price"]
    changed_dict["payment"]["amount"] = (
        item["total_price"]
        + changed_dict["payment"]["delivery_cost"]
        + changed_dict["payment"]["custom_fee"]
    )
    changed_dict["delivery"]["city"] = "Changed City"
    changed = order_from_dict(changed_dict)
    await publish(producer, pipeline_env["KAFKA_TOPIC"], [changed])

    expected = encode_order(changed)
    await eventually(
        lambda: served_from_equal(http, worker, original.order_uid, expected),
        what="the changed order served",
    )
    counts = await row_counts(pipeline_env["PG_URL"])
    assert counts == {"orders": 1, "deliveries": 1, "payments": 1, "items": 1}
    status, _, db_body = await lookup(http, worker, original.order_uid, "?nocache=1")
    assert (status, db_body) == (200, expected)


async def served_from_equal(
    http: aiohttp.ClientSession, worker: Worker, uid: str, expected: bytes
) -> bool:
    status, headers, body = await lookup(http, worker, uid)
    return status == 200 and headers.get("X-Source") == "cache" and body == expected


@pytest.mark.parametrize("store", ["rocksdb://", "memory://"])
async def test_restarted_worker_serves_its_cache_without_postgresql(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    store: str,
) -> None:
    orders = list(random_orders(11, 20))
    worker = await start_worker("restarted", CACHE_STORE=store)
    await publish(producer, pipeline_env["KAFKA_TOPIC"], orders)
    for order in orders:
        await eventually(functools.partial(served_from, http, worker, order.order_uid, "cache"))
    assert worker.stop() == 0

    # With the rows gone from PostgreSQL, only recovered cache state can answer.
    await admin_execute(pipeline_env["PG_URL"], "TRUNCATE orders CASCADE")
    restarted = await start_worker("restarted", CACHE_STORE=store)
    for order in orders:
        body = await eventually(
            functools.partial(served_from, http, restarted, order.order_uid, "cache"),
            what=f"{order.order_uid} recovered",
        )
        assert body == encode_order(order)


async def test_empty_cache_warms_up_from_postgresql(
    start_worker: Any, pipeline_env: dict[str, str], http: aiohttp.ClientSession
) -> None:
    orders = list(random_orders(5, 30))
    repo = OrderRepository(pipeline_env["PG_URL"])
    await repo.connect()
    await repo.upsert_many(orders)
    await repo.close()

    worker = await start_worker()
    for order in orders:
        body = await eventually(
            functools.partial(served_from, http, worker, order.order_uid, "cache"),
            what=f"{order.order_uid} warmed into the cache",
        )
        assert body == encode_order(order)


async def test_cache_disabled_serves_every_lookup_from_postgresql(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
) -> None:
    orders = list(random_orders(13, 5))
    worker = await start_worker(CACHE_ENABLED="false")
    await publish(producer, pipeline_env["KAFKA_TOPIC"], orders)
    await wait_stored(pipeline_env["PG_URL"], {o.order_uid for o in orders})
    for order in orders:
        status, headers, body = await lookup(http, worker, order.order_uid)
        assert (status, headers["X-Source"], body) == (200, "db", encode_order(order))


def orders_a_minute_apart(seed: int, n: int) -> list[Order]:
    """``n`` random orders created a minute apart, oldest first."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [random_order(rng, now=start + timedelta(minutes=i)) for i in range(n)]


async def test_cache_holds_at_most_cache_size_orders_the_newest(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
) -> None:
    orders = orders_a_minute_apart(seed=17, n=12)
    worker = await start_worker(KAFKA_PARTITIONS="1", CACHE_SIZE="5")
    await publish(producer, pipeline_env["KAFKA_TOPIC"], orders)
    await wait_stored(pipeline_env["PG_URL"], {o.order_uid for o in orders})
    newest = orders[-5:]
    for order in newest:
        await eventually(functools.partial(served_from, http, worker, order.order_uid, "cache"))
    sources = [(await lookup(http, worker, o.order_uid))[1]["X-Source"] for o in orders]
    assert sources == ["db"] * 7 + ["cache"] * 5


async def test_evicted_orders_stay_evicted_after_a_changelog_replay(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
) -> None:
    # The memory store starts empty: the restarted worker has only what the changelog says,
    # so evictions must be in it (as tombstones) as surely as the orders are.
    orders = orders_a_minute_apart(seed=19, n=12)
    settings = {"KAFKA_PARTITIONS": "1", "CACHE_SIZE": "5", "CACHE_STORE": "memory://"}
    worker = await start_worker("replayed", **settings)
    await publish(producer, pipeline_env["KAFKA_TOPIC"], orders)
    for order in orders[-5:]:
        await eventually(functools.partial(served_from, http, worker, order.order_uid, "cache"))
    assert worker.stop() == 0
    await admin_execute(pipeline_env["PG_URL"], "TRUNCATE orders CASCADE")

    restarted = await start_worker("replayed", **settings)
    for order in orders[-5:]:
        await eventually(
            functools.partial(served_from, http, restarted, order.order_uid, "cache"),
            what=f"{order.order_uid} replayed",
        )
    answers = [(await lookup(http, restarted, o.order_uid))[:2] for o in orders[:7]]
    assert [(status, headers["X-Source"]) for status, headers in answers] == [(404, "db")] * 7


async def test_postgresql_outage_pauses_consumption_and_loses_nothing(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    own_database: PrivateStack,
) -> None:
    orders = list(random_orders(23, 300))
    database = own_database.pg_url
    worker = await start_worker(PG_URL=database, DB_RETRY_MAX="1")
    topic = pipeline_env["KAFKA_TOPIC"]

    async def produce_slowly() -> None:
        for order in orders:
            await producer.send(topic, encode_order(order), key=order.order_uid.encode())
            await asyncio.sleep(0.02)
        await producer.flush()

    producing = asyncio.create_task(produce_slowly())
    await wait_stored(database, {orders[20].order_uid})
    await asyncio.to_thread(own_database.pg_stop)
    try:
        await eventually(
            lambda: logged(worker, "PostgreSQL unavailable"), timeout=30, what="the outage logged"
        )
        await asyncio.sleep(3)  # keep PostgreSQL down while orders keep arriving
    finally:
        await asyncio.to_thread(own_database.pg_up)
    await producing
    await wait_stored(database, {o.order_uid for o in orders}, timeout=90)
    counts = await row_counts(database)
    assert counts["orders"] == counts["payments"] == counts["deliveries"] == len(orders)
    assert counts["items"] == sum(len(o.items) for o in orders)
    log = worker.log()
    assert log.count("PostgreSQL unavailable") == 1
    assert log.count("PostgreSQL is back") == 1


async def logged(worker: Worker, text: str) -> bool:
    return text in worker.log()


async def test_produce_command_publishes_valid_orders_that_get_stored(
    start_worker: Any, pipeline_env: dict[str, str]
) -> None:
    await start_worker()
    result = orderstream_command("produce", "-n", "5", "--seed", "42", env=pipeline_env)
    uids = set(result.stdout.split())
    assert len(uids) == 5
    await wait_stored(pipeline_env["PG_URL"], uids)
    again = orderstream_command("produce", "-n", "5", "--seed", "42", env=pipeline_env)
    assert set(again.stdout.split()) == uids  # seeded: the same orders again


async def test_any_worker_answers_with_the_owners_cache(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
) -> None:
    # Forwarding: standby copies (STANDBY_READ_MAX_LAG) are tested in test_scale.py.
    first, second = (
        await start_worker(STANDBY_READ_MAX_LAG="off"),
        await start_worker(STANDBY_READ_MAX_LAG="off"),
    )
    orders = list(random_orders(29, 40))
    await publish(producer, pipeline_env["KAFKA_TOPIC"], orders)
    await wait_stored(pipeline_env["PG_URL"], {o.order_uid for o in orders})
    for order in orders:
        for worker in (first, second):
            body = await eventually(
                functools.partial(served_from, http, worker, order.order_uid, "cache"),
                what=f"{order.order_uid} from {worker.url}'s view",
            )
            assert body == encode_order(order)
    # The group has settled by now: ask again and note who answered.
    answered_by: dict[str, set[str]] = {}
    for order in orders:
        for worker in (first, second):
            _, headers, _ = await lookup(http, worker, order.order_uid)
            assert headers["X-Source"] == "cache"
            answered_by.setdefault(order.order_uid, set()).add(headers["X-Served-By"])
    # Each order is answered by one owner, whichever worker is asked; both workers own some.
    assert all(len(owners) == 1 for owners in answered_by.values())
    assert len(set().union(*answered_by.values())) == 2


async def test_sigterm_mid_stream_exits_cleanly_and_a_restart_loses_nothing(
    start_worker: Any, pipeline_env: dict[str, str], producer: AIOKafkaProducer
) -> None:
    orders = list(random_orders(31, 1500))
    worker = await start_worker("stopped")
    topic = pipeline_env["KAFKA_TOPIC"]

    async def produce_steadily() -> None:
        for order in orders:
            await producer.send(topic, encode_order(order), key=order.order_uid.encode())
            await asyncio.sleep(0.002)
        await producer.flush()

    producing = asyncio.create_task(produce_steadily())
    await wait_stored(pipeline_env["PG_URL"], {orders[100].order_uid})
    assert await asyncio.to_thread(worker.stop) == 0
    await producing
    await start_worker("stopped")
    await wait_stored(pipeline_env["PG_URL"], {o.order_uid for o in orders})
    counts = await row_counts(pipeline_env["PG_URL"])
    assert counts["orders"] == len(orders)
    assert counts["items"] == sum(len(o.items) for o in orders)


async def test_sigterm_during_an_outage_exits_without_committing_the_batch(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    own_database: PrivateStack,
) -> None:
    orders = list(random_orders(37, 50))
    database = own_database.pg_url
    worker = await start_worker("stopped", PG_URL=database, SHUTDOWN_TIMEOUT="3")
    await asyncio.to_thread(own_database.pg_stop)
    try:
        await publish(producer, pipeline_env["KAFKA_TOPIC"], orders)
        await eventually(
            # the agent's line, not the warm-up's (which may come first, with no batch in hand)
            lambda: logged(worker, "PostgreSQL unavailable, pausing"),
            timeout=30,
            what="the outage logged",
        )
        assert await asyncio.to_thread(worker.stop) == EXIT_UNFINISHED
    finally:
        await asyncio.to_thread(own_database.pg_up)
    await start_worker("stopped", PG_URL=database)
    await wait_stored(database, {o.order_uid for o in orders})
