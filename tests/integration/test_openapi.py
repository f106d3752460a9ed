"""openapi.yaml: the document is valid, it is strict, and a real worker's answers match it."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from harness import REPO_ROOT, Worker, eventually

SPEC_PATH = REPO_ROOT / "openapi.yaml"
# The spec's server; the requests are described at it, wherever the test worker listens.
DOCUMENTED_SERVER = "http://localhost:8081"
MODEL_UID = "b563feb7b2b84b6test"


@dataclass(frozen=True)
class Reply:
    path: str
    query: Mapping[str, str]
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def content_type(self) -> str:
        return dict(self.headers).get("Content-Type", "")

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    """The spec, checked against the OpenAPI meta-schema as it loads."""
    return OpenAPI.from_file_path(str(SPEC_PATH))


async def fetch(
    http: aiohttp.ClientSession, worker: Worker, path: str, query: Mapping[str, str] | None = None
) -> Reply:
    async with http.get(f"{worker.url}{path}", params=query) as reply:
        return Reply(
            path, dict(query or {}), reply.status, list(reply.headers.items()), await reply.read()
        )


def spec_errors(openapi: OpenAPI, reply: Reply) -> list[str]:
    """Every way ``reply`` breaks the spec, with the schema's own messages; empty when it fits."""
    request = MockRequest(DOCUMENTED_SERVER, "get", reply.path, args=dict(reply.query))
    response = MockResponse(
        reply.body, status_code=reply.status, headers=reply.headers, content_type=reply.content_type
    )
    errors = []
    for error in openapi.iter_response_errors(request, response):
        causes = getattr(error.__cause__, "schema_errors", None) or ()
        details = "; ".join(getattr(cause, "message", str(cause)) for cause in causes)
        errors.append(f"{str(error)[:300]}" + (f" [{details[:500]}]" if details else ""))
    return errors


def assert_matches_spec(openapi: OpenAPI, reply: Reply) -> None:
    errors = spec_errors(openapi, reply)
    assert not errors, (
        f"GET {reply.path} {dict(reply.query)} -> {reply.status} "
        f"breaks openapi.yaml: {errors}\nbody: {reply.body[:500]!r}"
    )


# --- the document itself ----------------------------------------------------------------


def test_spec_documents_every_endpoint(openapi: OpenAPI) -> None:
    spec = yaml.safe_load(SPEC_PATH.read_text())
    assert spec["openapi"].startswith("3.")
    assert {"/order/{order_uid}", "/health", "/ready", "/metrics", "/openapi.yaml"} <= set(
        spec["paths"]
    )


def test_order_example_is_model_json(model_json: bytes) -> None:
    spec = yaml.safe_load(SPEC_PATH.read_text())
    assert spec["components"]["schemas"]["Order"]["example"] == orjson.loads(model_json)


def order_reply(body: bytes, **headers: str) -> Reply:
    base = {
        "Content-Type": "application/json",
        "X-Source": "cache",
        "X-Duration-ms": "0.125",
        "X-Served-By": "http://127.0.0.1:8081",
    }
    return Reply(f"/order/{MODEL_UID}", {}, 200, list({**base, **headers}.items()), body)


@pytest.mark.parametrize(
    "change, where",
    [
        ({"sm_id": "99"}, "integer as a string"),
        ({"items[0].price": "453"}, "nested integer as a string"),
        ({"payment.amount": 18.17}, "number that is not an integer"),
        ({"delivery.zip": 2639809}, "string as an integer"),
        ({"date_created": "26.11.2021 06:22"}, "date that is not date-time"),
        ({"unknown": 1}, "extra field"),
        ({"items[0].unknown": 1}, "extra nested field"),
        ({"items": []}, "no items"),
        ({"payment.currency": "usd"}, "currency"),
    ],
)
def test_spec_rejects_an_order_that_differs_from_model_json(
    openapi: OpenAPI, order_dict: Any, change: dict[str, Any], where: str
) -> None:
    assert spec_errors(openapi, order_reply(orjson.dumps(order_dict()))) == []
    assert spec_errors(openapi, order_reply(orjson.dumps(order_dict(change)))), where


@pytest.mark.parametrize("missing", ["oof_shard", "payment.custom_fee", "items[0].status"])
def test_spec_requires_every_field(openapi: OpenAPI, order_dict: Any, missing: str) -> None:
    assert spec_errors(openapi, order_reply(orjson.dumps(order_dict(drop=[missing]))))


@pytest.mark.parametrize("headers", [{"X-Source": "disk"}, {"X-Duration-ms": "fast"}])
def test_spec_checks_the_order_headers(
    openapi: OpenAPI, model_json: bytes, headers: dict[str, str]
) -> None:
    assert spec_errors(openapi, order_reply(model_json, **headers))
    reply = order_reply(model_json)
    without_source = Reply(
        reply.path, {}, 200, [(k, v) for k, v in reply.headers if k != "X-Source"], reply.body
    )
    assert spec_errors(openapi, without_source)


def test_spec_checks_the_readiness_shape(openapi: OpenAPI) -> None:
    def ready(body: Any, status: int = 503) -> Reply:
        return Reply(
            "/ready", {}, status, [("Content-Type", "application/json")], orjson.dumps(body)
        )

    good = {
        "ready": False,
        "checks": {
            "postgresql": {"ok": False, "detail": "refused"},
            "kafka_assignment": {"ok": True},
            "table_recovery": {"ok": True, "detail": "done"},
        },
    }
    assert spec_errors(openapi, ready(good)) == []
    assert spec_errors(openapi, ready({**good, "ready": "no"}))
    assert spec_errors(openapi, ready({"ready": True}, 200))
    broken = copy.deepcopy(good)
    del broken["checks"]["postgresql"]["ok"]
    assert spec_errors(openapi, ready(broken))


# --- a real worker's answers ------------------------------------------------------------


async def test_order_answers_match_the_spec(
    openapi: OpenAPI,
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    model_json: bytes,
) -> None:
    worker = await start_worker()
    await producer.send_and_wait(pipeline_env["KAFKA_TOPIC"], model_json, key=MODEL_UID.encode())
    path = f"/order/{MODEL_UID}"

    async def from_cache() -> Reply | None:
        reply = await fetch(http, worker, path)
        return reply if reply.status == 200 and reply.header("X-Source") == "cache" else None

    cached = await eventually(from_cache, what="model.json served from the cache")
    assert_matches_spec(openapi, cached)
    assert orjson.loads(cached.body) == orjson.loads(model_json)

    for query in ({"nocache": "1"}, {"nocache": "true"}):
        stored = await fetch(http, worker, path, query)
        assert (stored.status, stored.header("X-Source")) == (200, "db")
        assert_matches_spec(openapi, stored)

    missing = await fetch(http, worker, "/order/no-such-order")
    assert missing.status == 404
    assert_matches_spec(openapi, missing)

    malformed = await fetch(http, worker, "/order/bad%20id!")
    assert malformed.status == 400
    assert_matches_spec(openapi, malformed)


async def test_health_answer_matches_the_spec(
    openapi: OpenAPI, start_worker: Any, http: aiohttp.ClientSession
) -> None:
    worker = await start_worker()
    reply = await fetch(http, worker, "/health")
    assert reply.status == 200, reply
    assert_matches_spec(openapi, reply)
    assert orjson.loads(reply.body) == {"status": "ok"}


async def test_ready_answers_match_the_spec(
    openapi: OpenAPI, start_worker: Any, http: aiohttp.ClientSession
) -> None:
    worker = await start_worker()
    seen: list[Reply] = []

    async def ready() -> Reply | None:
        reply = await fetch(http, worker, "/ready")
        seen.append(reply)
        assert reply.status in (200, 503), reply
        return reply if reply.status == 200 else None

    answer = await eventually(ready, timeout=60, interval=0.2, what="/ready answering 200")
    for reply in seen[:1] + seen[-2:]:  # the first answer, the last 503 if any, the 200
        assert_matches_spec(openapi, reply)
    body = orjson.loads(answer.body)
    assert body["ready"] is True
    assert {"postgresql", "kafka_assignment", "table_recovery"} <= set(body["checks"])
    assert all(check["ok"] is True for check in body["checks"].values())


async def test_metrics_answer_matches_the_spec(
    openapi: OpenAPI, start_worker: Any, http: aiohttp.ClientSession
) -> None:
    worker = await start_worker()
    reply = await fetch(http, worker, "/metrics")
    assert reply.status == 200, reply
    assert_matches_spec(openapi, reply)


async def test_openapi_document_is_served(
    openapi: OpenAPI, start_worker: Any, http: aiohttp.ClientSession
) -> None:
    worker = await start_worker()
    reply = await fetch(http, worker, "/openapi.yaml")
    assert reply.status == 200
    assert reply.content_type.split(";")[0] == "application/yaml"
    assert reply.body == SPEC_PATH.read_bytes()
    assert_matches_spec(openapi, reply)
