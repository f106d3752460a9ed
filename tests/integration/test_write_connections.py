"""A batch written on PG_WRITE_CONNECTIONS connections at once, split by partition, against a
real PostgreSQL: the same rows as on one, versions kept across batches, an outage with one
group committed and the other not, and an order PostgreSQL refuses isolated in its group."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from faust.events import Event
from faust.types import Message

from harness import admin_execute, eventually
from orderstream import metrics
from orderstream.agents import Accepted, store_isolating_rejects
from orderstream.app import OrderApp, create_app
from orderstream.config import Settings
from orderstream.order.generator import random_orders
from orderstream.order.records import Order, encode_order, order_from_dict, order_to_dict
from orderstream.order_sql import ORDER_DOCUMENT
from orderstream.write_groups import partition_groups

from ..private_stack import PrivateStack
from .test_pipeline import dead_letters, publish, row_counts, stored_uids, wait_stored

PARTITIONS = 8

# Every stored order: the document built from its rows, its stored body and its version.
STORED = f"SELECT o.order_uid, {ORDER_DOCUMENT}, o.body, o.kafka_offset FROM orders o"


@asynccontextmanager
async def app_writing_on(pg_url: str, connections: int, tmp_path: Path) -> AsyncIterator[OrderApp]:
    """The service's app (not started: no Kafka) with its repository connected."""
    app = create_app(
        Settings(
            pg_url=pg_url,
            kafka_partitions=PARTITIONS,
            pg_pool_size=connections + 1,
            pg_write_connections=connections,
            db_retry_max=0.5,
            data_dir=tmp_path / f"data-{connections}",
        )
    )
    await app.repo.connect()
    try:
        yield app
    finally:
        await app.repo.close()


def accepted(app: OrderApp, order: Order, offset: int) -> Accepted:
    """``order`` as the agent accepts it: its message at ``offset`` of its order_uid's
    partition."""
    key, body = order.order_uid.encode(), encode_order(order)
    partition = app.recent_orders.partition_for(key)
    message = Message("orders", partition, offset, 0.0, 0, None, key, body, None)
    return Accepted(Event(app, key, body, None, message), order, key, body, partition)


def batch_of(app: OrderApp, orders: Sequence[Order], first_offset: int = 0) -> list[Accepted]:
    return [accepted(app, order, first_offset + n) for n, order in enumerate(orders)]


async def stored(pg_url: str) -> dict[str, tuple[Any, str, int | None]]:
    conn = await asyncpg.connect(pg_url, server_settings={"timezone": "UTC"})
    try:
        return {
            uid: (orjson.loads(built), body, version)
            for uid, built, body, version in await conn.fetch(STORED)
        }
    finally:
        await conn.close()


def upsert_count() -> float:
    """Upserts that succeeded so far in this process (metrics' orderstream_db_batch_size)."""
    return metrics.registry.get_sample_value("orderstream_db_batch_size_count") or 0.0


def version_of(order: Order, city: str) -> Order:
    data = order_to_dict(order)
    data["delivery"]["city"] = city
    return order_from_dict(data)


@pytest.mark.parametrize("connections", [2, 3])
async def test_a_batch_over_partitions_is_stored_as_on_one_connection(
    clean_database: str, tmp_path: Path, connections: int
) -> None:
    orders = list(random_orders(61, 400))
    snapshots = []
    for n in (1, connections):
        await admin_execute(clean_database, "TRUNCATE orders CASCADE")
        async with app_writing_on(clean_database, n, tmp_path) as app:
            batch = batch_of(app, orders)
            assert len({item.partition for item in batch}) == PARTITIONS
            upserts = upsert_count()
            written, refused = await store_isolating_rejects(app, batch)
            assert upsert_count() - upserts == n  # one per connection
        assert (written, refused) == ({order.order_uid for order in orders}, [])
        snapshots.append(await stored(clean_database))
    assert snapshots[0] == snapshots[1]
    assert {uid: body for uid, (_, body, _) in snapshots[1].items()} == {
        order.order_uid: encode_order(order).decode() for order in orders
    }
    assert await row_counts(clean_database) == {
        "orders": 400,
        "deliveries": 400,
        "payments": 400,
        "items": sum(len(order.items) for order in orders),
    }


async def test_a_newer_version_is_never_replaced_by_an_older_one_across_batches(
    clean_database: str, tmp_path: Path
) -> None:
    orders = list(random_orders(67, 120))
    rng = random.Random(67)
    async with app_writing_on(clean_database, 2, tmp_path) as app:
        # Three versions of every order at increasing offsets, over consecutive batches;
        # within a batch a newer version may come before an older one of the same order.
        versions = [
            accepted(app, version_of(order, f"v{v}"), 1000 * v + n)
            for v in range(3)
            for n, order in enumerate(orders)
        ]
        batches = [versions[first : first + 100] for first in range(0, len(versions), 100)]
        for batch in batches:
            rng.shuffle(batch)
            _, refused = await store_isolating_rejects(app, batch)
            assert refused == []
        newest = {
            uid: (body, version)
            for uid, (_, body, version) in (await stored(clean_database)).items()
        }
        assert newest == {
            order.order_uid: (encode_order(version_of(order, "v2")).decode(), 2000 + n)
            for n, order in enumerate(orders)
        }
        # Batches delivered again (a replay) write only the versions stored already (the
        # same data again) and change nothing.
        for batch in batches:
            written, _ = await store_isolating_rejects(app, batch)
            assert written == {
                item.order.order_uid for item in batch if item.event.message.offset >= 2000
            }
    assert {
        uid: (body, version) for uid, (_, body, version) in (await stored(clean_database)).items()
    } == newest


async def test_an_outage_with_one_group_committed_loses_nothing_and_duplicates_nothing(
    own_database: PrivateStack, tmp_path: Path
) -> None:
    database = own_database.pg_url
    orders = list(random_orders(71, 300))
    async with app_writing_on(database, 2, tmp_path) as app:
        batch = batch_of(app, orders, first_offset=1)
        first, second = partition_groups(batch, lambda item: item.partition, 2)
        # One order of the second group is stored already, and held: the second group's
        # transaction waits for it while the first group's commits.
        held = second[0].order
        await app.repo.upsert_encoded([(held.order_uid, encode_order(held), 0)])
        holder = await asyncpg.connect(database)
        holding = holder.transaction()
        await holding.start()
        await holder.execute("SELECT 1 FROM orders WHERE order_uid = $1 FOR UPDATE", held.order_uid)

        writing = asyncio.create_task(store_isolating_rejects(app, batch))
        first_uids = {item.order.order_uid for item in first}
        await eventually(lambda: all_stored(database, first_uids), what="the first group committed")
        assert not writing.done()
        second_new = {item.order.order_uid for item in second[1:]}
        assert not await stored_uids(database) & second_new
        await asyncio.to_thread(own_database.pg_stop)  # cuts the second group's write short
        holder.terminate()
        await asyncio.sleep(1)
        assert not writing.done()  # retrying, not given up
        await asyncio.to_thread(own_database.pg_up)
        written, refused = await asyncio.wait_for(writing, 60)
    assert (written, refused) == ({order.order_uid for order in orders}, [])
    assert await row_counts(database) == {
        "orders": 300,
        "deliveries": 300,
        "payments": 300,
        "items": sum(len(order.items) for order in orders),
    }
    assert {uid: (body, v) for uid, (_, body, v) in (await stored(database)).items()} == {
        item.order.order_uid: (item.body.decode(), item.event.message.offset) for item in batch
    }


async def all_stored(database: str, uids: set[str]) -> bool | None:
    return uids <= await stored_uids(database) or None


@asynccontextmanager
async def deliveries_refusing(database: str, city: str) -> AsyncIterator[None]:
    """PostgreSQL refuses deliveries to ``city`` (a check an operator might add) meanwhile."""
    await admin_execute(
        database, f"ALTER TABLE deliveries ADD CONSTRAINT refused_city CHECK (city <> '{city}')"
    )
    try:
        yield
    finally:
        await admin_execute(database, "ALTER TABLE deliveries DROP CONSTRAINT refused_city")


async def test_an_order_postgresql_refuses_is_isolated_in_its_group(
    clean_database: str, tmp_path: Path
) -> None:
    orders = list(random_orders(73, 200))
    refused_order = version_of(orders[5], "Refused")
    orders[5] = refused_order
    async with deliveries_refusing(clean_database, "Refused"):
        async with app_writing_on(clean_database, 2, tmp_path) as app:
            batch = batch_of(app, orders)
            written, refused = await store_isolating_rejects(app, batch)
    assert [item.order.order_uid for item in refused] == [refused_order.order_uid]
    others = {order.order_uid for order in orders} - {refused_order.order_uid}
    assert written == others
    assert await stored_uids(clean_database) == others


async def test_a_worker_on_two_connections_dead_letters_the_refused_order_and_stores_the_rest(
    start_worker: Callable[..., Awaitable[Any]],
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
) -> None:
    database, topic = pipeline_env["PG_URL"], pipeline_env["KAFKA_TOPIC"]
    orders = list(random_orders(79, 60))
    refused_order = version_of(orders[30], "Refused")
    orders[30] = refused_order
    others = {order.order_uid for order in orders} - {refused_order.order_uid}
    async with deliveries_refusing(database, "Refused"):
        await start_worker(PG_WRITE_CONNECTIONS="2", BATCH_WAIT="0.5")
        await publish(producer, topic, orders)
        await wait_stored(database, others)
        (letter,) = await dead_letters(pipeline_env["KAFKA_BROKERS"], f"{topic}.dlq", 1)
    headers = dict(letter.headers)
    assert headers["x-error-reason"] == b"db_rejected"
    assert letter.value == encode_order(refused_order)
    assert await stored_uids(database) == others
