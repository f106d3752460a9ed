"""GET /metrics: Prometheus text whose counters move as orders flow and lookups hit and miss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from harness import Worker, eventually
from orderstream.order.generator import random_orders
from orderstream.order.partitioning import partition_of
from orderstream.order.records import encode_order

ORDER_ROUTE = "/order/{order_uid}"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: aiohttp.ClientSession, worker: Worker) -> Samples:
    """Every sample on the worker's /metrics page, by name and labels."""
    async with http.get(f"{worker.url}/metrics") as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await reply.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much a counter (or a histogram's _count or _sum) moved between two scrapes."""
    return (value(after, name, **labels) or 0.0) - (value(before, name, **labels) or 0.0)


def requests_counted(source: str, status: int) -> tuple[str, dict[str, str]]:
    return "orderstream_http_request_seconds_count", {
        "route": ORDER_ROUTE,
        "source": source,
        "status": str(status),
    }


async def lookup(http: aiohttp.ClientSession, worker: Worker, uid: str) -> tuple[int, Any]:
    async with http.get(f"{worker.url}/order/{uid}") as reply:
        await reply.read()
        return reply.status, reply.headers


async def test_counters_move_with_orders_and_lookups_and_lag_drops_to_zero(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    order_dict: Callable[..., dict[str, Any]],
) -> None:
    worker = await start_worker(CACHE_SIZE="100000")
    topic, partitions = pipeline_env["KAFKA_TOPIC"], int(pipeline_env["KAFKA_PARTITIONS"])
    before = await scrape(http, worker)

    # N orders keyed by order_uid, one more on a partition other than its order_uid's
    # (forwarded, then consumed again), one message that is not JSON, one that breaks a rule.
    *keyed, misplaced = random_orders(41, 7)
    for order in keyed:
        await producer.send(topic, encode_order(order), key=order.order_uid.encode())
    key = misplaced.order_uid.encode()
    await producer.send(
        topic,
        encode_order(misplaced),
        key=key,
        partition=(partition_of(key, partitions) + 1) % partitions,
    )
    await producer.send(topic, b"not json at all", key=b"bad-key")
    await producer.send(
        topic,
        orjson.dumps(order_dict({"order_uid": "wrongsum", "payment.amount": 1})),
        key=b"bad-key",
    )
    await producer.flush()
    stored = len(keyed) + 1
    consumed = stored + 2 + 1  # every message taken: stored, dead-lettered, forwarded

    async def all_counted() -> Samples | None:
        after = await scrape(http, worker)
        done = (
            moved(before, after, "orderstream_orders_consumed_total") >= consumed
            and value(after, "orderstream_cache_size") == stored
        )
        return after if done else None

    after = await eventually(all_counted, timeout=60, what="orders counted and cached")

    assert moved(before, after, "orderstream_orders_consumed_total") == consumed
    assert moved(before, after, "orderstream_orders_stored_total") == stored
    assert moved(before, after, "orderstream_orders_forwarded_total") == 1
    dead = {
        reason: moved(before, after, "orderstream_orders_dead_lettered_total", reason=reason)
        for reason in ("not_json", "not_an_order", "invalid", "db_rejected")
    }
    assert dead == {"not_json": 1, "not_an_order": 0, "invalid": 1, "db_rejected": 0}
    assert moved(before, after, "orderstream_db_batch_seconds_count") >= 1
    assert moved(before, after, "orderstream_db_batch_size_sum") == stored
    assert value(after, "orderstream_cache_size") == stored
    # Faust's own sensor records into the same registry: the orders topic's end offsets.
    end_offsets = {
        dict(labels)["partition"]: number
        for (name, labels), number in after.items()
        if name == "orderstream_faust_topic_partition_end_offset" and dict(labels)["topic"] == topic
    }
    assert sum(end_offsets.values()) == consumed

    # One hit, one miss (an unknown id: 404 from PostgreSQL), one malformed id (no source).
    before = after
    status, headers = await lookup(http, worker, keyed[0].order_uid)
    assert (status, headers["X-Source"]) == (200, "cache")
    status, headers = await lookup(http, worker, "no-such-order")
    assert (status, headers["X-Source"]) == (404, "db")
    status, _ = await lookup(http, worker, "bad%20id!")
    assert status == 400
    after = await scrape(http, worker)
    assert moved(before, after, "orderstream_cache_hits_total") == 1
    assert moved(before, after, "orderstream_cache_misses_total") == 1
    for source, status in (("cache", 200), ("db", 404), ("none", 400)):
        name, labels = requests_counted(source, status)
        assert moved(before, after, name, **labels) == 1, (source, status)

    # Everything is processed: once committed, no partition of the orders topic lags.
    async def no_lag() -> dict[str, float] | None:
        samples = await scrape(http, worker)
        lag = {
            dict(labels)["partition"]: number
            for (name, labels), number in samples.items()
            if name == "orderstream_consumer_lag" and dict(labels)["topic"] == topic
        }
        return (
            lag
            if set(lag) == {str(p) for p in range(partitions)} and not any(lag.values())
            else None
        )

    await eventually(no_lag, what="consumer lag 0 on every partition of the orders topic")


async def test_a_routed_lookup_is_timed_where_asked_and_counted_as_a_hit_by_the_owner(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
) -> None:
    # Forwarded, not answered from the asked worker's standby copy (STANDBY_READ_MAX_LAG).
    owner, asked = (
        await start_worker(STANDBY_READ_MAX_LAG="off"),
        await start_worker(STANDBY_READ_MAX_LAG="off"),
    )
    orders = list(random_orders(43, 20))
    for order in orders:
        await producer.send(
            pipeline_env["KAFKA_TOPIC"], encode_order(order), key=order.order_uid.encode()
        )
    await producer.flush()

    async def owned_by_first() -> str | None:
        for order in orders:
            status, headers = await lookup(http, asked, order.order_uid)
            if (status, headers.get("X-Source"), headers.get("X-Served-By")) == (
                200,
                "cache",
                owner.url,
            ):
                return order.order_uid
        return None

    uid = await eventually(
        owned_by_first, timeout=60, what="an order cached by the first worker, asked of the second"
    )

    before = {worker.url: await scrape(http, worker) for worker in (owner, asked)}
    status, headers = await lookup(http, asked, uid)
    assert (status, headers["X-Source"], headers["X-Served-By"]) == (200, "cache", owner.url)
    after = {worker.url: await scrape(http, worker) for worker in (owner, asked)}

    name, labels = requests_counted("cache", 200)
    for worker in (owner, asked):
        assert moved(before[worker.url], after[worker.url], name, **labels) == 1, worker.url
    hits = {
        worker.url: moved(before[worker.url], after[worker.url], "orderstream_cache_hits_total")
        for worker in (owner, asked)
    }
    assert hits == {owner.url: 1, asked.url: 0}
