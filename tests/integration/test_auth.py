"""API_TOKENS and METRICS_TOKEN on real workers: who may read orders, what stays open.

What a user relies on: with tokens set, no order leaves a worker without one of them (not by
/order, not by Faust's own /table view), whichever worker is asked; the page, its assets and
the probes stay open for browsers and orchestrators; a token never reaches the log; and a
database outage is answered without naming the database's host.
"""

from __future__ import annotations

import asyncio
import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from harness import REPO_ROOT, Worker, eventually
from orderstream.order.generator import random_orders

from ..private_stack import PrivateStack
from .test_fuzz_api import fuzz
from .test_pipeline import publish, wait_stored

pytestmark = pytest.mark.timeout(240)

MODEL_UID = "b563feb7b2b84b6test"
FUZZ_EXAMPLES = 150
TOKENS = ("tok-alpha-5f2c9e", "tok-beta-81d0aa")
METRICS_TOKEN = "metrics-7c1e44"
# What Faust serves itself when left on: cached orders and the cluster's layout.
FAUST_VIEWS = [
    "/table/",
    "/table/order-cache/",
    f"/table/order-cache/{MODEL_UID}/",
    "/router/",
    f"/router/order-cache/{MODEL_UID}/",
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def get(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    async with http.get(url, headers=headers or {}) as reply:
        return reply.status, dict(reply.headers), await reply.read()


async def cached_with(
    http: aiohttp.ClientSession, worker: Worker, uid: str, token: str
) -> bytes | None:
    status, headers, body = await get(http, f"{worker.url}/order/{uid}", bearer(token))
    return body if status == 200 and headers.get("X-Source") == "cache" else None


def assert_refused(status: int, headers: dict[str, str], body: bytes, *, refused: bool) -> None:
    """A 401 JSON error with a Bearer challenge, and nothing of the order."""
    assert status == 401, (status, body[:300])
    assert headers["Content-Type"].startswith("application/json")
    error = orjson.loads(body)["error"]
    assert error == "invalid token" if refused else error.startswith("authentication required")
    assert headers["WWW-Authenticate"].startswith("Bearer ")
    assert ('error="invalid_token"' in headers["WWW-Authenticate"]) == refused
    assert b"Testov" not in body and b"@" not in body


async def test_tokens_guard_orders_and_metrics_and_leave_the_page_and_probes_open(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    model_json: bytes,
) -> None:
    worker = await start_worker(
        API_TOKENS=f" {TOKENS[0]} , {TOKENS[1]},", METRICS_TOKEN=METRICS_TOKEN
    )
    await producer.send_and_wait(pipeline_env["KAFKA_TOPIC"], model_json, key=MODEL_UID.encode())
    await eventually(
        lambda: cached_with(http, worker, MODEL_UID, TOKENS[0]),
        what="model.json served from the cache with a token",
    )
    order = f"{worker.url}/order/{MODEL_UID}"

    # Without a token, with a wrong one, or another scheme: 401, and nothing of the order.
    assert_refused(*await get(http, order), refused=False)
    for authorization in (
        f"Bearer {TOKENS[0]}x",
        f"Bearer {TOKENS[0][:-1]}",
        "Bearer ",
        f"Basic {TOKENS[0]}",
        TOKENS[0],
        f"Bearer {METRICS_TOKEN}",
        f"Bearer {TOKENS[0]},{TOKENS[1]}",
    ):
        assert_refused(*await get(http, order, {"Authorization": authorization}), refused=True)
    for uid in ("no-such-order", "not valid!"):  # the answer does not tell what exists
        assert_refused(*await get(http, f"{worker.url}/order/{uid}"), refused=False)
    assert_refused(*await get(http, f"{worker.url}/order/"), refused=False)

    # Either token, the scheme in any case, from the cache and from PostgreSQL.
    for headers in (bearer(TOKENS[0]), bearer(TOKENS[1]), {"Authorization": f"bearer {TOKENS[1]}"}):
        status, _, body = await get(http, order, headers)
        assert status == 200 and orjson.loads(body) == orjson.loads(model_json), body[:200]
    status, reply_headers, _ = await get(http, f"{order}?nocache=1", bearer(TOKENS[1]))
    assert (status, reply_headers["X-Source"]) == (200, "db")
    assert (await get(http, f"{worker.url}/order/no-such-order", bearer(TOKENS[0])))[0] == 404
    assert (await get(http, f"{worker.url}/order/", bearer(TOKENS[0])))[0] == 400

    # Open without a token: the page, its assets, the probes and this document.
    for path in ("/", "/static/app.js", "/static/style.css", "/health", "/openapi.yaml"):
        assert (await get(http, f"{worker.url}{path}"))[0] == 200, path
    assert (await get(http, f"{worker.url}/ready"))[0] in (200, 503)

    # /metrics takes METRICS_TOKEN, and only it.
    assert_refused(*await get(http, f"{worker.url}/metrics"), refused=False)
    assert_refused(*await get(http, f"{worker.url}/metrics", bearer(TOKENS[0])), refused=True)
    status, _, body = await get(http, f"{worker.url}/metrics", bearer(METRICS_TOKEN))
    assert (
        status == 200
        and b'orderstream_http_request_seconds_count{route="/order/{order_uid}"'
        b',source="none",status="401"}'
        in body
    )

    # Faust's own views are off: no order and no cluster layout, with or without a token.
    for path in FAUST_VIEWS:
        for headers in ({}, bearer(TOKENS[0])):
            status, _, body = await get(http, f"{worker.url}{path}", headers)
            assert status == 404 and orjson.loads(body) == {"error": "not found"}, (path, body)

    await asyncio.sleep(0.5)  # let the worker write its log
    log = worker.log()
    assert not [token for token in (*TOKENS, METRICS_TOKEN) if token in log]
    assert "API_TOKENS is empty" not in log  # bound to 127.0.0.1, and tokens are set anyway


class OpenWorker(Worker):
    """A worker bound to every interface (HTTP_ADDR=:port), reached on 127.0.0.1."""

    def start(self) -> OpenWorker:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "orderstream", "worker", "-l", "info"],
                env={**self.env, "HTTP_ADDR": f":{self.port}"},
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self


async def test_without_tokens_on_every_interface_the_start_up_warns_once(
    pipeline_env: dict[str, str], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    worker = OpenWorker(
        {**pipeline_env, "DATA_DIR": str(tmp_path / "data")}, log_path=tmp_path / "open.log"
    ).start()
    try:
        await worker.wait_serving(http)
        # No tokens: lookups are open, as before (and as test_fuzz_api.py fuzzes them).
        assert (await get(http, f"{worker.url}/order/{MODEL_UID}"))[0] == 404
        assert (await get(http, f"{worker.url}/metrics"))[0] == 200
        warnings = [line for line in worker.log().splitlines() if "API_TOKENS is empty" in line]
        assert len(warnings) == 1, warnings
        assert "WARNING" in warnings[0] and f"0.0.0.0:{worker.port}" in warnings[0]
    finally:
        worker.stop()


async def test_any_worker_answers_with_the_owners_cache_when_tokens_are_set(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
) -> None:
    first, second = (
        await start_worker(API_TOKENS=",".join(TOKENS), STANDBY_READ_MAX_LAG="off"),
        await start_worker(API_TOKENS=",".join(TOKENS), STANDBY_READ_MAX_LAG="off"),
    )
    orders = list(random_orders(41, 24))
    await publish(producer, pipeline_env["KAFKA_TOPIC"], orders)
    await wait_stored(pipeline_env["PG_URL"], {o.order_uid for o in orders})
    for order in orders:
        for worker in (first, second):
            await eventually(
                functools.partial(cached_with, http, worker, order.order_uid, TOKENS[1]),
                what=f"{order.order_uid} from {worker.url}'s view",
            )
    answered_by: dict[str, set[str]] = {}
    for order in orders:
        for worker in (first, second):
            status, headers, _ = await get(
                http, f"{worker.url}/order/{order.order_uid}", bearer(TOKENS[1])
            )
            # From the owner's cache: the forwarded lookup carried the caller's token.
            assert (status, headers["X-Source"]) == (200, "cache")
            answered_by.setdefault(order.order_uid, set()).add(headers["X-Served-By"])
            # Without a token, the worker asked refuses at once: nothing is forwarded.
            assert_refused(*await get(http, f"{worker.url}/order/{order.order_uid}"), refused=False)
    assert all(len(owners) == 1 for owners in answered_by.values())
    assert len(set().union(*answered_by.values())) == 2, "no lookup was forwarded"
    for worker in (first, second):
        assert "refused the token" not in worker.log()


async def test_a_lookup_during_a_database_outage_names_no_host(
    own_database: PrivateStack, start_worker: Any, http: aiohttp.ClientSession
) -> None:
    worker = await start_worker(PG_URL=own_database.pg_url)
    url = f"{worker.url}/order/{MODEL_UID}?nocache=1"
    assert (await get(http, url))[0] == 404
    log_start = len(worker.log())
    await asyncio.to_thread(own_database.pg_stop)
    try:
        for _ in range(5):
            status, _, body = await get(http, url)
            assert status == 503, body
            assert orjson.loads(body) == {"error": "database unavailable"}
            assert str(own_database.pg_port).encode() not in body
    finally:
        await asyncio.to_thread(own_database.pg_up)
    await eventually(lambda: answered(http, url, 404), what="lookups answered again")
    await asyncio.sleep(0.5)  # let the worker write its log
    log = worker.log()[log_start:]
    # The operator learns why, once for the outage, and that it ended.
    outage = [line for line in log.splitlines() if "Lookups answer 503" in line]
    assert len(outage) == 1 and "WARNING" in outage[0], outage
    assert "Lookups read PostgreSQL again" in log


async def answered(http: aiohttp.ClientSession, url: str, status: int) -> bool:
    return (await get(http, url))[0] == status


async def test_fuzzed_requests_with_a_token_get_documented_answers(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    model_json: bytes,
) -> None:
    """test_fuzz_api.py's fuzzing, on a worker with API_TOKENS and METRICS_TOKEN set."""
    worker = await start_worker(API_TOKENS=",".join(TOKENS), METRICS_TOKEN=METRICS_TOKEN)
    await producer.send_and_wait(pipeline_env["KAFKA_TOPIC"], model_json, key=MODEL_UID.encode())
    await eventually(
        lambda: cached_with(http, worker, MODEL_UID, TOKENS[0]),
        what="model.json served from the cache with a token",
    )
    with_token = await asyncio.to_thread(fuzz, worker.url, bearer(TOKENS[0]), FUZZ_EXAMPLES)
    without = await asyncio.to_thread(fuzz, worker.url, {}, FUZZ_EXAMPLES // 2)
    for statuses in (with_token, without):
        assert not [status for status in statuses if status >= 500], sorted(set(statuses))
    # With the token the lookups are answered; without it they are refused, as documented.
    assert {200, 400, 404} <= set(with_token), sorted(set(with_token))
    assert 401 in without, sorted(set(without))
    assert not [token for token in (*TOKENS, METRICS_TOKEN) if token in worker.log()]
