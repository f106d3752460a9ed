"""Order versions never go backwards: the later message of an order wins, in PostgreSQL and cache.

The version of an order is the offset of its message on its own partition. A late write, by a
worker that was stopped (SIGSTOP) past its session while another took its partitions over,
or a cache update that arrives after a newer one, must not replace the newer copy.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any

import aiohttp
import asyncpg
from aiokafka import AIOKafkaProducer

from harness import Worker, eventually
from orderstream.cache.bundle import bundle
from orderstream.cache.entry import encode_entry
from orderstream.order.partitioning import partition_of
from orderstream.order.records import Order, encode_order, order_from_dict

from .test_pipeline import lookup, publish, served_from, wait_stored
from .test_scale import settled_assignment

PARTITIONS = 4


def versions(order_dict: Callable[..., dict[str, Any]], uid: str, count: int) -> list[Order]:
    """``count`` versions of one order, told apart by their delivery city."""
    return [
        order_from_dict(order_dict({"order_uid": uid, "delivery.city": f"City {n}"}))
        for n in range(1, count + 1)
    ]


async def stored_body(database_url: str, uid: str) -> bytes:
    conn = await asyncpg.connect(database_url)
    try:
        return (await conn.fetchval("SELECT body FROM orders WHERE order_uid = $1", uid)).encode()
    finally:
        await conn.close()


async def test_a_cache_update_older_than_the_cached_entry_is_ignored(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    order_dict: Callable[..., dict[str, Any]],
) -> None:
    worker = await start_worker()
    uid = "versioned-order"
    older, newer = versions(order_dict, uid, 2)
    partition = partition_of(uid.encode(), PARTITIONS)
    # An order of the same partition, cached after both updates: when it is served, both
    # have been handled (one partition is consumed in order).
    sentinel_uid = next(
        f"sentinel-{n}"
        for n in range(1000)
        if partition_of(f"sentinel-{n}".encode(), PARTITIONS) == partition
    )
    sentinel = versions(order_dict, sentinel_uid, 1)[0]
    updates_topic = f"{pipeline_env['KAFKA_GROUP_ID']}-order-cache-updates"
    # The newer version's update arrives first; the older one late, as from a stalled worker.
    for key, version, order in ((uid, 30, newer), (uid, 20, older), (sentinel_uid, 1, sentinel)):
        (data,) = bundle([(key.encode(), encode_entry(version, encode_order(order)))])
        await producer.send_and_wait(updates_topic, data, partition=partition)
    await eventually(lambda: served_from(http, worker, sentinel_uid, "cache"))
    status, headers, body = await lookup(http, worker, uid)
    assert (status, headers["X-Source"], body) == (200, "cache", encode_order(newer))


async def test_a_worker_stopped_past_its_session_writes_late_and_the_later_version_wins(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    order_dict: Callable[..., dict[str, Any]],
) -> None:
    workers = [await start_worker("first"), await start_worker("second")]
    topic, database_url = pipeline_env["KAFKA_TOPIC"], pipeline_env["PG_URL"]
    uid = "contested-order"
    partition = partition_of(uid.encode(), PARTITIONS)
    # Another order of the same partition: its row lock holds up the batch before the
    # contested order's, so that one is in the worker's hands, not yet written, when it stops.
    blocker_uid = next(
        f"blocker-{n}"
        for n in range(1000)
        if partition_of(f"blocker-{n}".encode(), PARTITIONS) == partition
    )
    first, second, third = versions(order_dict, uid, 3)
    blocker, blocker_again = versions(order_dict, blocker_uid, 2)
    # Both in one generation first: a rebalance still to come would revoke the partition
    # mid-test, and its revoke would wait on the batch the row lock holds up.
    owners = await settled_assignment(http, workers, partitions=PARTITIONS)
    stalled = next(worker for worker in workers if partition in owners[worker.url])
    survivor = next(worker for worker in workers if worker is not stalled)
    assert stalled.process is not None

    await publish(producer, topic, [first, blocker])
    await wait_stored(database_url, {uid, blocker_uid}, timeout=60)
    lock = await asyncpg.connect(database_url)
    try:
        transaction = lock.transaction()
        await transaction.start()
        await lock.execute("SELECT 1 FROM orders WHERE order_uid = $1 FOR UPDATE", blocker_uid)
        await publish(producer, topic, [blocker_again])  # its batch waits for the lock
        await asyncio.sleep(1)
        await publish(producer, topic, [second])  # taken and validated, waiting its turn
        await asyncio.sleep(1)
        os.kill(stalled.process.pid, signal.SIGSTOP)
        await transaction.rollback()  # PostgreSQL finishes the blocked batch meanwhile
    finally:
        await lock.close()
    try:
        # The session times out (10 s); the survivor takes the partition over, reads the
        # uncommitted second version again and, after it, the third.
        await publish(producer, topic, [third])
        expected = encode_order(third)
        await eventually(
            lambda: served_equal(http, survivor, uid, expected),
            timeout=60,
            what="the third version served by the survivor",
        )
    finally:
        os.kill(stalled.process.pid, signal.SIGCONT)
    # The stalled worker wakes up with the second version in hand and writes it, late.
    await eventually(
        lambda: logged_not_stored(stalled),
        timeout=60,
        what="the stalled worker's late write refused",
    )
    await asyncio.sleep(2)  # let any cache update it might send arrive
    assert await stored_body(database_url, uid) == expected

    # The stalled worker rejoining starts a rebalance, which may hand it the partition back
    # while its own store still holds the first version: no lookup may ever answer an older
    # version (during the rebalance PostgreSQL answers), and a cache answers once it is over.
    async def survivor_serves_the_third_from_a_cache() -> bool:
        status, headers, body = await lookup(http, survivor, uid)
        assert (status, body) == (200, expected), f"an older version from {headers['X-Source']}"
        return headers["X-Source"].startswith("cache")

    await eventually(
        survivor_serves_the_third_from_a_cache,
        timeout=30,
        interval=0.05,
        what="the third version from a cache",
    )
    # The stalled worker serves its own stale cache until it notices it lost the partition
    # (its next heartbeat); then it asks the owner, like any other worker.
    await eventually(
        lambda: served_equal(http, stalled, uid, expected),
        timeout=30,
        what="the third version served by the worker that stalled",
    )


async def served_equal(
    http: aiohttp.ClientSession, worker: Worker, uid: str, expected: bytes
) -> bool:
    status, _, body = await lookup(http, worker, uid)
    return status == 200 and body == expected


async def logged_not_stored(worker: Worker) -> bool:
    return "a later version of each is stored already" in worker.log()
