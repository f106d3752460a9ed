"""Fuzz a real worker from openapi.yaml with schemathesis: no 5xx, every answer as documented.

Requests are generated from the document (valid ones, and invalid ones: an order_uid that
breaks its pattern or length, odd query values), sent to a worker started by the suite, and
each answer is checked by schemathesis' checks: no server error, a documented status, content
type and headers, a body that fits its schema. PostgreSQL is up, so the documented 503 for
an unreachable database must not happen either.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
import requests
import schemathesis
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from harness import REPO_ROOT, eventually

pytestmark = pytest.mark.timeout(240)

MODEL_UID = "b563feb7b2b84b6test"
# Generated requests in all, valid and invalid ones together.
EXAMPLES = 400

schema = schemathesis.openapi.from_path(REPO_ROOT / "openapi.yaml")


def fuzz(
    base_url: str, headers: dict[str, str] | None = None, examples: int = EXAMPLES
) -> list[int]:
    """Send ``examples`` generated requests (with ``headers``) and check each answer; return
    the statuses seen."""
    statuses: list[int] = []
    strategy = schema.as_strategy(GenerationMode.POSITIVE) | schema.as_strategy(
        GenerationMode.NEGATIVE
    )
    with requests.Session() as session:
        session.headers.update(headers or {})

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def send(case: Any) -> None:
            reply = case.call_and_validate(base_url=base_url, session=session, timeout=10)
            statuses.append(reply.status_code)

        send()
    return statuses


async def test_fuzzed_requests_get_documented_answers(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    model_json: bytes,
) -> None:
    worker = await start_worker()
    # One stored order, so lookups of it are answered 200 with a whole Order to check.
    await producer.send_and_wait(pipeline_env["KAFKA_TOPIC"], model_json, key=MODEL_UID.encode())

    async def cached() -> bool:
        async with http.get(f"{worker.url}/order/{MODEL_UID}") as reply:
            return reply.status == 200 and reply.headers.get("X-Source") == "cache"

    await eventually(cached, what="model.json served from the cache")

    found = schema["/order/{order_uid}"]["GET"].Case(path_parameters={"order_uid": MODEL_UID})
    assert (
        await asyncio.to_thread(found.call_and_validate, base_url=worker.url)
    ).status_code == 200

    statuses = await asyncio.to_thread(fuzz, worker.url)
    assert len(statuses) >= EXAMPLES // 2, "fewer requests than asked for were generated"
    assert not [status for status in statuses if status >= 500], sorted(set(statuses))
    # Both sides were exercised: answers, and refusals of what the document does not allow.
    assert {200, 400, 404} <= set(statuses), sorted(set(statuses))
    assert "Traceback" not in worker.log()
