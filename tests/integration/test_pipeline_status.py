"""GET /api/pipeline and /api/orders/recent on real workers: what the live panel shows.

What an operator relies on: producing orders moves the counters and rates, a bad message the
dead-letter ones; every partition is listed with its owner and lag; the cache's hit ratio
follows lookups; any worker of a group answers for all of them, and a worker that hangs or
dies is listed as unreachable without holding the answer up; the newest stored orders come
first; with API_TOKENS set, none of it is told without a token.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from openapi_core import OpenAPI

from harness import Worker, eventually
from orderstream.order.generator import random_orders

from ..secrets_registry import register_secret
from .test_openapi import SPEC_PATH, Reply, assert_matches_spec
from .test_pipeline import publish, wait_stored

pytestmark = pytest.mark.timeout(240)

PARTITIONS = 4  # pipeline_env's
TOKEN = register_secret("tok-pipeline-3b7e41d2")


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    return OpenAPI.from_file_path(str(SPEC_PATH))


async def status_of(
    http: aiohttp.ClientSession,
    worker: Worker,
    *,
    token: str | None = None,
    scope: str | None = None,
) -> tuple[Reply, Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    query = {} if scope is None else {"scope": scope}
    async with http.get(f"{worker.url}/api/pipeline", params=query, headers=headers) as reply:
        body = await reply.read()
        answer = Reply("/api/pipeline", query, reply.status, list(reply.headers.items()), body)
    assert answer.status == 200, (answer.status, body[:500])
    return answer, orjson.loads(body)


async def pipeline(http: aiohttp.ClientSession, worker: Worker, **kwargs: Any) -> Any:
    return (await status_of(http, worker, **kwargs))[1]


async def recent(
    http: aiohttp.ClientSession, worker: Worker, limit: str | None = None, token: str | None = None
) -> tuple[int, Any, Reply]:
    query = {} if limit is None else {"limit": limit}
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with http.get(f"{worker.url}/api/orders/recent", params=query, headers=headers) as reply:
        body = await reply.read()
        answer = Reply("/api/orders/recent", query, reply.status, list(reply.headers.items()), body)
    return reply.status, orjson.loads(body), answer


async def test_the_panel_follows_orders_dead_letters_lookups_and_lists_recent_orders(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    openapi: OpenAPI,
) -> None:
    worker = await start_worker()
    topic = pipeline_env["KAFKA_TOPIC"]

    async def ready() -> Any:
        body = await pipeline(http, worker)
        return body if body["ready"] else None

    idle = await eventually(ready, timeout=60, what="the pipeline ready")
    assert (idle["group"], idle["topic"], idle["dead_letter_topic"]) == (
        pipeline_env["KAFKA_GROUP_ID"],
        topic,
        f"{topic}.dlq",
    )
    assert idle["answered_by"] == worker.url
    assert idle["totals"] == {"consumed": 0, "stored": 0, "dead_lettered": 0}
    assert idle["dead_letters"] == {"total": 0}
    [own] = idle["workers"]
    assert (own["url"], own["self"], own["reachable"], own["ready"]) == (
        worker.url,
        True,
        True,
        True,
    )
    assert {"postgresql", "kafka", "kafka_assignment", "table_recovery"} <= set(own["checks"])
    assert own["partitions"] == list(range(PARTITIONS))

    # Orders: totals and rates move, every partition is the worker's and is caught up.
    first = list(random_orders(seed=31, n=40))
    await publish(producer, topic, first)

    async def stored_with_rates() -> Any:
        reply, body = await status_of(http, worker)
        moving = body["totals"]["stored"] == len(first) and body["rates"]["stored"] > 0
        return (reply, body) if moving else None

    reply, moving = await eventually(stored_with_rates, what="40 stored, at a rate above 0")
    assert_matches_spec(openapi, reply)
    assert moving["totals"]["consumed"] == len(first)
    assert moving["rates"]["consumed"] > 0
    assert moving["rates"] == moving["workers"][0]["rates"]

    async def caught_up() -> Any:
        body = await pipeline(http, worker)
        rows = body["partitions"]
        done = all(row["lag"] == 0 for row in rows) and sum(
            row["end_offset"] for row in rows
        ) == len(first)
        return rows if done else None

    rows = await eventually(caught_up, what="every partition committed to its end")
    assert [row["partition"] for row in rows] == list(range(PARTITIONS))
    assert {row["owner"] for row in rows} == {worker.url}
    assert all(row["committed"] == row["end_offset"] for row in rows)

    # A bad message: the dead-letter counters, and the topic's size.
    await producer.send_and_wait(topic, b"not json", key=b"bad-1")

    async def dead_lettered() -> Any:
        body = await pipeline(http, worker)
        done = (
            body["totals"]["dead_lettered"] == 1
            and body["dead_letters"]["total"] == 1
            and body["rates"]["dead_lettered"] > 0
        )
        return body if done else None

    bad = await eventually(dead_lettered, what="the bad message counted as dead-lettered")
    assert bad["totals"] == {"consumed": len(first) + 1, "stored": len(first), "dead_lettered": 1}

    # Lookups: two hits and one miss (wait_serving's probe was a miss already).
    before = bad["cache"]
    for uid in (first[0].order_uid, first[1].order_uid, "no-such-order"):
        async with http.get(f"{worker.url}/order/{uid}") as answer:
            assert answer.status == (404 if uid == "no-such-order" else 200)
    cache = (await pipeline(http, worker))["cache"]
    hits, misses = before["hits"] + 2, before["misses"] + 1
    assert cache == {
        "enabled": True,
        "size": len(first),
        "hits": hits,
        "misses": misses,
        "hit_ratio": round(hits / (hits + misses), 3),
    }

    # Recent orders: a later batch comes first, the limit is kept, bad limits are refused.
    later = list(random_orders(seed=32, n=3))
    await publish(producer, topic, later)
    await wait_stored(pipeline_env["PG_URL"], {o.order_uid for o in later})
    status, body, answer = await recent(http, worker, "3")
    assert status == 200
    assert_matches_spec(openapi, answer)
    newest = body["orders"]
    assert {o["order_uid"] for o in newest} == {o.order_uid for o in later}
    assert {(o["order_uid"], o["track_number"]) for o in newest} == {
        (o.order_uid, o.track_number) for o in later
    }
    status, body, answer = await recent(http, worker)
    assert status == 200 and len(body["orders"]) == 20  # the default
    stored_at = [o["stored_at"] for o in body["orders"]]
    assert stored_at == sorted(stored_at, reverse=True)
    assert stored_at[0] > stored_at[-1]  # two batches: the later one first
    assert [o["order_uid"] for o in body["orders"][:3]] == [o["order_uid"] for o in newest]
    status, body, _ = await recent(http, worker, "100")
    assert status == 200 and len(body["orders"]) == len(first) + len(later)
    for limit in ("0", "101", "-1", "ten", "", "2.5", "1000000"):
        status, body, answer = await recent(http, worker, limit)
        assert status == 400, (limit, body)
        assert body["error"] == "limit must be an integer from 1 to 100"
        assert_matches_spec(openapi, answer)

    worker_reply, block = await status_of(http, worker, scope="worker")
    assert_matches_spec(openapi, worker_reply)
    assert block["url"] == worker.url and "workers" not in block
    async with http.get(f"{worker.url}/api/pipeline?scope=cluster") as refused:
        assert refused.status == 400
    assert "Traceback" not in worker.log()


async def test_either_of_two_workers_answers_for_both_and_a_lost_one_is_listed_unreachable(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    openapi: OpenAPI,
) -> None:
    a, b = await asyncio.gather(
        start_worker("a", API_TOKENS=TOKEN), start_worker("b", API_TOKENS=TOKEN)
    )
    topic = pipeline_env["KAFKA_TOPIC"]

    # Without a token (or with another one) nothing is told.
    for worker in (a, b):
        for path in ("/api/pipeline", "/api/pipeline?scope=worker", "/api/orders/recent"):
            for headers in ({}, {"Authorization": "Bearer not-the-token"}):
                async with http.get(f"{worker.url}{path}", headers=headers) as reply:
                    assert reply.status == 401, path
                    assert reply.headers["WWW-Authenticate"].startswith("Bearer ")
                    assert set(orjson.loads(await reply.read())) == {"error"}

    async def split() -> Any:
        """Both workers ready, each with partitions, every partition owned once."""
        body = await pipeline(http, a, token=TOKEN)
        workers = body["workers"]
        owners = [row["owner"] for row in body["partitions"]]
        done = (
            body["ready"]
            and [w["url"] for w in workers] == [a.url, b.url]
            and all(w["partitions"] for w in workers)
            and set(owners) == {a.url, b.url}
        )
        return body if done else None

    body = await eventually(split, timeout=90, what="two workers sharing the partitions")
    own, peer = body["workers"]
    assert (own["self"], peer["self"], peer["reachable"]) == (True, False, True)
    assert sorted(own["partitions"] + peer["partitions"]) == list(range(PARTITIONS))
    for row in body["partitions"]:
        assert row["owner"] == (a.url if row["partition"] in own["partitions"] else b.url)

    # Orders spread over both: either worker tells the group's totals.
    orders = list(random_orders(seed=33, n=40))
    await publish(producer, topic, orders)
    for worker in (a, b):

        async def group_totals(worker: Worker = worker) -> Any:
            reply, body = await status_of(http, worker, token=TOKEN)
            done = body["totals"]["stored"] == len(orders) and all(
                w["totals"]["stored"] > 0 for w in body["workers"]
            )
            return (reply, body) if done else None

        reply, body = await eventually(group_totals, what=f"{worker.url} telling 40 stored")
        assert_matches_spec(openapi, reply)
        assert body["answered_by"] == worker.url
        assert [w["self"] for w in body["workers"]] == [True, False]
        assert {w["url"] for w in body["workers"]} == {a.url, b.url}
        assert sum(w["totals"]["stored"] for w in body["workers"]) == len(orders)
        assert all(row["owner"] is not None for row in body["partitions"])
    status, recent_body, _ = await recent(http, b, "100", token=TOKEN)
    assert status == 200 and len(recent_body["orders"]) == len(orders)

    # b hangs (stopped, its socket still accepts): listed unreachable, answer within ~1 s.
    b_partitions = next(w["partitions"] for w in body["workers"] if w["url"] == b.url)
    assert b.process is not None
    os.kill(b.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        reply, hung = await status_of(http, a, token=TOKEN)
        took = time.monotonic() - started
        assert_matches_spec(openapi, reply)
    finally:
        b.kill()  # SIGKILL ends a stopped process too
    listed = {w["url"]: w for w in hung["workers"]}
    assert listed[b.url]["reachable"] is False and listed[b.url]["error"] == "no answer within 1 s"
    assert listed[a.url]["reachable"] is True
    assert took < 2.5, took
    assert hung["ready"] is False
    for row in hung["partitions"]:
        if row["partition"] in b_partitions:
            assert row["owner"] == b.url and row["lag"] is None

    # b is dead (nothing listens): unreachable at once; then a takes every partition over.
    started = time.monotonic()
    dead = await pipeline(http, a, token=TOKEN)
    took = time.monotonic() - started
    if len(dead["workers"]) == 2:  # still in the assignment, until its session expires
        assert next(w for w in dead["workers"] if w["url"] == b.url)["reachable"] is False
    assert took < 1.5, took

    async def alone() -> Any:
        body = await pipeline(http, a, token=TOKEN)
        done = (
            body["ready"]
            and [w["url"] for w in body["workers"]] == [a.url]
            and {row["owner"] for row in body["partitions"]} == {a.url}
        )
        return body if done else None

    await eventually(alone, timeout=60, what="a owning every partition after b died")
    assert "Traceback" not in a.log()


async def test_workers_whose_database_hangs_are_still_listed_reachable_and_answer_in_time(
    start_worker: Any, pipeline_env: dict[str, str], http: aiohttp.ClientSession
) -> None:
    """PostgreSQL accepts connections and never answers: each worker's own check gives up
    before a peer's deadline, so the panel says the database is down, not that workers are."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up; never a byte back
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hung_pg = f"postgres://postgres:postgres@127.0.0.1:{port}/orders?sslmode=disable"
    try:
        # With API_TOKENS set the start-up probe is answered before any database read.
        a, b = await asyncio.gather(
            start_worker("a", PG_URL=hung_pg, API_TOKENS=TOKEN),
            start_worker("b", PG_URL=hung_pg, API_TOKENS=TOKEN),
        )

        async def both_listed() -> Any:
            started = time.monotonic()
            body = await pipeline(http, a, token=TOKEN)
            took = time.monotonic() - started
            workers = body["workers"]
            listed = [w["url"] for w in workers] == [a.url, b.url] and all(
                w["partitions"] for w in workers
            )
            return (body, took) if listed and all(w["reachable"] for w in workers) else None

        body, took = await eventually(
            both_listed, timeout=90, what="both workers listed and reachable"
        )
        assert took < 1.5, took
        assert body["ready"] is False
        for worker in body["workers"]:
            assert worker["ready"] is False
            assert worker["checks"]["postgresql"] == {
                "ok": False,
                "detail": "PostgreSQL does not answer (TimeoutError)",
            }
    finally:
        server.close()
