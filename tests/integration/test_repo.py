"""The repository against a real PostgreSQL: round trips, upserts, batches and domain errors."""

import time
from collections.abc import Callable
from typing import Any

import asyncpg
import orjson
import pytest
from yarl import URL

from orderstream.config import Settings
from orderstream.order.generator import random_orders
from orderstream.order.records import Order, encode_order, order_from_dict, order_to_dict
from orderstream.repo import DatabaseUnavailable, OrderRejected, OrderRepository

OrderDict = Callable[..., dict[str, Any]]

COUNT_ROWS = """
SELECT (SELECT count(*) FROM orders) AS orders, (SELECT count(*) FROM deliveries) AS deliveries,
       (SELECT count(*) FROM payments) AS payments, (SELECT count(*) FROM items) AS items
"""


async def count_rows(database_url: str) -> dict[str, int]:
    """Rows in each table, read on a connection of its own (not through the repository)."""
    conn = await asyncpg.connect(database_url)
    try:
        return dict(await conn.fetchrow(COUNT_ROWS))
    finally:
        await conn.close()


def rows(orders: int, items: int) -> dict[str, int]:
    return {"orders": orders, "deliveries": orders, "payments": orders, "items": items}


def order_with_prices(
    order_dict: OrderDict, prices: list[int], overrides: dict[str, Any] | None = None
) -> Order:
    """model.json with one unsold item per price and payment totals that add up."""
    data = order_dict(overrides)
    first = data["items"][0]
    data["items"] = [
        {**first, "chrt_id": first["chrt_id"] + n, "price": price, "sale": 0, "total_price": price}
        for n, price in enumerate(prices)
    ]
    payment = data["payment"]
    payment["goods_total"] = sum(prices)
    payment["amount"] = sum(prices) + payment["delivery_cost"] + payment["custom_fee"]
    return order_from_dict(data)


async def test_model_json_round_trip(repo: OrderRepository, model_json: bytes) -> None:
    await repo.upsert_many([order_from_dict(orjson.loads(model_json))])
    stored = await repo.get("b563feb7b2b84b6test")
    assert stored is not None
    body = encode_order(stored)
    assert orjson.loads(body) == orjson.loads(model_json)
    # orjson keeps key order, so equal compact bytes also means the same key order throughout.
    assert body == orjson.dumps(orjson.loads(model_json))


async def test_same_order_twice_is_stored_once(
    repo: OrderRepository, clean_database: str, model_json: bytes
) -> None:
    order = order_from_dict(orjson.loads(model_json))
    await repo.upsert_many([order])
    await repo.upsert_many([order])
    assert await count_rows(clean_database) == rows(orders=1, items=1)


async def test_changed_order_replaces_items_and_fields(
    repo: OrderRepository, clean_database: str, order_dict: OrderDict
) -> None:
    await repo.upsert_many([order_with_prices(order_dict, [100, 200, 300])])
    assert await count_rows(clean_database) == rows(orders=1, items=3)

    changed = order_with_prices(
        order_dict,
        [999],
        {"customer_id": "someone-else", "delivery.city": "Haifa", "payment.bank": "sber"},
    )
    await repo.upsert_many([changed])
    assert await count_rows(clean_database) == rows(orders=1, items=1)
    stored = await repo.get(changed.order_uid)
    assert stored is not None and order_to_dict(stored) == order_to_dict(changed)


async def test_ten_thousand_orders_in_batches(repo: OrderRepository, clean_database: str) -> None:
    orders = list(random_orders(20240517, 10_000))
    assert len({order.order_uid for order in orders}) == len(orders)  # the seed gives no repeats
    started = time.perf_counter()
    for start in range(0, len(orders), 500):
        await repo.upsert_many(orders[start : start + 500])
    elapsed = time.perf_counter() - started
    print(
        f"\nstored {len(orders):,} orders in batches of 500 in {elapsed:.2f} s: "
        f"{len(orders) / elapsed:,.0f} orders/s"
    )

    assert await count_rows(clean_database) == rows(
        orders=10_000, items=sum(len(order.items) for order in orders)
    )
    for order in orders[::2500]:
        stored = await repo.get(order.order_uid)
        assert stored is not None and encode_order(stored) == encode_order(order)


async def test_duplicates_in_one_batch_keep_the_last(
    repo: OrderRepository, clean_database: str, order_dict: OrderDict
) -> None:
    first = order_with_prices(order_dict, [100, 200], {"customer_id": "first"})
    last = order_with_prices(order_dict, [300], {"customer_id": "last"})
    await repo.upsert_many([first, last])
    assert await count_rows(clean_database) == rows(orders=1, items=1)
    stored = await repo.get(last.order_uid)
    assert stored is not None and order_to_dict(stored) == order_to_dict(last)


async def test_get_missing_order_is_none(repo: OrderRepository) -> None:
    assert await repo.get("no-such-order") is None


@pytest.mark.parametrize(
    "created",
    [
        "2021-11-26T06:22:19Z",
        "2021-11-26T06:22:19.000001Z",
        "2021-11-26T06:22:19.120000Z",
        "2021-11-26T09:22:19.5+03:00",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999Z",
    ],
)
async def test_stored_body_is_the_wire_json_byte_for_byte(
    repo: OrderRepository, order_dict: OrderDict, created: str
) -> None:
    order = order_from_dict(
        order_dict({"date_created": created, "delivery.name": 'Ünïcode "quoted" \\ name'})
    )
    await repo.upsert_many([order])

    assert await repo.get_body(order.order_uid) == encode_order(order)


async def test_generated_orders_come_back_as_the_bodies_they_were_stored_as(
    repo: OrderRepository,
) -> None:
    orders = list(random_orders(seed=31, n=200))
    await repo.upsert_encoded([(order.order_uid, encode_order(order), None) for order in orders])

    for order in orders:
        assert await repo.get_body(order.order_uid) == encode_order(order)


async def test_an_older_version_never_replaces_a_newer_one(
    repo: OrderRepository, clean_database: str, order_dict: OrderDict
) -> None:
    first, second, third = (
        order_from_dict(order_dict({"delivery.city": city}))
        for city in ("First", "Second", "Third")
    )
    uid = first.order_uid
    assert await repo.upsert_encoded([(uid, encode_order(second), 20)]) == {uid}
    # A late write of an earlier message (a stalled worker, a replay) is not written...
    assert await repo.upsert_encoded([(uid, encode_order(first), 10)]) == set()
    assert await repo.get_body(uid) == encode_order(second)
    conn = await asyncpg.connect(clean_database)
    try:  # the rows too, not only the body
        assert (
            await conn.fetchval("SELECT city FROM deliveries WHERE order_uid = $1", uid) == "Second"
        )
    finally:
        await conn.close()
    # ...the same version again is (idempotent), and so is a later one.
    assert await repo.upsert_encoded([(uid, encode_order(second), 20)]) == {uid}
    assert await repo.upsert_encoded([(uid, encode_order(third), 30)]) == {uid}
    assert await repo.get_body(uid) == encode_order(third)
    # In one batch the newest version wins, whatever the order of the batch.
    assert await repo.upsert_encoded(
        [(uid, encode_order(first), 50), (uid, encode_order(second), 40)]
    ) == {uid}
    assert await repo.get_body(uid) == encode_order(first)
    # An order without a version (another writer) is written whatever is stored.
    assert await repo.upsert_many([third]) == {uid}
    assert await repo.get_body(uid) == encode_order(third)
    assert [version for _, version in await repo.load_recent_versions(1)] == [None]


async def test_load_recent_is_newest_first_and_limited(
    repo: OrderRepository, order_dict: OrderDict
) -> None:
    created = {
        "middle": "2024-02-01T00:00:00Z",
        "oldest": "2023-01-01T00:00:00Z",
        "newest": "2024-03-01T12:00:00+03:00",
    }
    await repo.upsert_many(
        [
            order_from_dict(order_dict({"order_uid": uid, "date_created": when}))
            for uid, when in created.items()
        ]
    )
    assert [o.order_uid for o in await repo.load_recent(10)] == ["newest", "middle", "oldest"]
    assert [o.order_uid for o in await repo.load_recent(2)] == ["newest", "middle"]


@pytest.mark.parametrize(
    "attribute, value",
    [
        ("items[0].status", 2**40),  # integer column: asyncpg's encoder refuses it
        ("sm_id", 2**63),  # bigint column: likewise
        ("delivery.name", "Test\x00Testov"),  # text: the server refuses the NUL byte
    ],
)
async def test_data_postgres_refuses_is_rejected(
    repo: OrderRepository,
    clean_database: str,
    model_json: bytes,
    order_dict: OrderDict,
    attribute: str,
    value: Any,
) -> None:
    good = order_from_dict(order_dict({"order_uid": "a-good-order"}))
    bad = order_from_dict(orjson.loads(model_json))  # valid, then spoiled past validation
    *parents, name = attribute.replace("[0]", ".0").split(".")
    target: Any = bad
    for part in parents:
        target = target[int(part)] if part.isdigit() else getattr(target, part)
    setattr(target, name, value)

    with pytest.raises(OrderRejected) as caught:
        await repo.upsert_many([good, bad])
    assert isinstance(caught.value.__cause__, asyncpg.DataError)
    assert await count_rows(clean_database) == rows(
        orders=0, items=0
    )  # all of the batch rolled back


@pytest.fixture
async def unreachable_repo(settings: Settings) -> Any:
    """A repository whose server does not exist: nothing listens on loopback port 1."""
    repository = OrderRepository(str(URL(settings.pg_url).with_host("127.0.0.1").with_port(1)))
    await repository.connect()  # connections open lazily, so this succeeds
    yield repository
    await repository.close()


@pytest.mark.parametrize("call", ["ping", "get", "upsert_many", "load_recent"])
async def test_unreachable_database_is_unavailable(
    unreachable_repo: OrderRepository, model_json: bytes, call: str
) -> None:
    arguments = {
        "ping": (),
        "get": ("b563feb7b2b84b6test",),
        "load_recent": (10,),
        "upsert_many": ([order_from_dict(orjson.loads(model_json))],),
    }
    with pytest.raises(DatabaseUnavailable) as caught:
        await getattr(unreachable_repo, call)(*arguments[call])
    assert isinstance(caught.value.__cause__, OSError)
