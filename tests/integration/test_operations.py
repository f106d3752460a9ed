"""Operating the worker: health, readiness, logs."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer
from yarl import URL

from harness import Worker, eventually

from ..private_stack import PrivateStack


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as reply:
        return reply.status, orjson.loads(await reply.read())


async def test_ready_waits_for_the_group_and_recovery_while_health_answers(
    pipeline_env: dict[str, str], http: aiohttp.ClientSession, tmp_path: Any
) -> None:
    worker = Worker(
        {**pipeline_env, "DATA_DIR": str(tmp_path / "data")}, log_path=tmp_path / "worker.log"
    ).start()
    try:

        async def first_answer() -> Any:
            try:
                return await get_json(http, f"{worker.url}/ready")
            except aiohttp.ClientError:
                return None

        status, body = await eventually(
            first_answer, timeout=60, interval=0.02, what="a first /ready answer"
        )
        # The web server starts before the worker has joined its group and recovered.
        assert status == 503 and body["ready"] is False
        assert body["checks"]["postgresql"]["ok"] is True
        assert not (
            body["checks"]["kafka_assignment"]["ok"] and body["checks"]["table_recovery"]["ok"]
        )
        assert await get_json(http, f"{worker.url}/health") == (200, {"status": "ok"})

        async def ready() -> Any:
            status, body = await get_json(http, f"{worker.url}/ready")
            return body if status == 200 else None

        body = await eventually(ready, timeout=60, what="/ready 200")
        assert all(check["ok"] for check in body["checks"].values())
    finally:
        worker.stop()


async def test_ready_fails_while_postgresql_is_down_and_health_does_not(
    start_worker: Any, http: aiohttp.ClientSession, own_database: PrivateStack
) -> None:
    worker = await start_worker(PG_URL=own_database.pg_url)
    await eventually(lambda: status_of(http, f"{worker.url}/ready", 200), what="ready")
    await asyncio.to_thread(own_database.pg_stop)
    try:
        status, body = await get_json(http, f"{worker.url}/ready")
        assert status == 503
        assert body["checks"]["postgresql"]["ok"] is False
        # Says what failed, not where: an open endpoint names no host or port.
        assert body["checks"]["postgresql"]["detail"].startswith("PostgreSQL does not answer (")
        port = str(URL(own_database.pg_url).port)
        assert "127.0.0.1" not in str(body) and port not in str(body)
        assert body["checks"]["kafka_assignment"]["ok"] is True
        assert (await get_json(http, f"{worker.url}/health"))[0] == 200
    finally:
        await asyncio.to_thread(own_database.pg_up)
    await eventually(lambda: status_of(http, f"{worker.url}/ready", 200), what="ready again")


async def status_of(http: aiohttp.ClientSession, url: str, expected: int) -> bool:
    async with http.get(url) as reply:
        return reply.status == expected


async def test_json_logs_carry_the_order_and_never_the_password(
    start_worker: Any, pipeline_env: dict[str, str], producer: AIOKafkaProducer
) -> None:
    worker = await start_worker(LOG_FORMAT="json", LOG_LEVEL="info")
    await producer.send(pipeline_env["KAFKA_TOPIC"], b'{"order_uid": "broken-1"}', key=b"k")
    await producer.flush()

    async def dead_letter_logged() -> Any:
        lines = [orjson.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("order_uid") == "broken-1"]

    [line] = await eventually(dead_letter_logged, what="the dead-letter log line")
    assert line["level"] == "WARNING"
    assert line["topic"] == pipeline_env["KAFKA_TOPIC"]
    assert line["partition"] >= 0 and line["offset"] == 0
    password = pipeline_env["PG_URL"].split("@")[0].rsplit(":", 1)[1]
    assert f":{password}@" not in worker.log()
