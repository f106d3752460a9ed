"""Dead letters on the real stack: `dlq list`, `dlq replay` and their HTTP endpoints against a
real worker, letters written by it (and one written as it would after a db_rejected)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from harness import REPO_ROOT, Worker, eventually, orderstream_command
from orderstream.order.partitioning import partition_of

from ..private_stack import PrivateStack

PARTITIONS = 4  # pipeline_env's KAFKA_PARTITIONS
TOKEN = "dead-letter-test-token"
DOCUMENTED_SERVER = "http://localhost:8081"


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    return OpenAPI.from_file_path(str(REPO_ROOT / "openapi.yaml"))


class Api:
    """The worker's dead-letter endpoints, each answer checked against openapi.yaml."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        worker: Worker,
        openapi: OpenAPI,
        token: str | None = None,
    ) -> None:
        self.http, self.worker, self.openapi = http, worker, openapi
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        sent = {**self.headers, **(headers if headers is not None else {})}
        if body is not None:
            sent["Content-Type"] = content_type
        async with self.http.request(
            method, f"{self.worker.url}{path}", params=query, data=body, headers=sent
        ) as reply:
            raw = await reply.read()
            answer = (reply.status, list(reply.headers.items()), raw)
        request = MockRequest(
            DOCUMENTED_SERVER,
            method.lower(),
            path,
            args=query or {},
            data=body,
            content_type=content_type if body else None,
        )
        response = MockResponse(
            raw,
            status_code=answer[0],
            headers=answer[1],
            content_type=dict(answer[1]).get("Content-Type", ""),
        )
        errors = [
            str(error)[:300] for error in self.openapi.iter_response_errors(request, response)
        ]
        assert not errors, (
            f"{method} {path} -> {answer[0]} breaks openapi.yaml: {errors}\n{raw[:500]!r}"
        )
        return answer[0], orjson.loads(raw)

    async def letters(self, **query: str) -> Any:
        status, body = await self.call("GET", "/api/dead-letters", query=query)
        assert status == 200, body
        return body

    async def replay(self, request: Any) -> tuple[int, Any]:
        return await self.call("POST", "/api/dead-letters/replay", body=orjson.dumps(request))


def dlq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return orderstream_command("dlq", *args, env=env)


def dlq_fails(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    with pytest.raises(subprocess.CalledProcessError) as failed:
        dlq(env, *args)
    assert "Traceback" not in failed.value.stderr, failed.value.stderr
    return subprocess.CompletedProcess(
        failed.value.cmd, failed.value.returncode, failed.value.stdout, failed.value.stderr
    )


async def wait_total(api: Api, total: int) -> Any:
    async def reached() -> Any:
        body = await api.letters()
        return body if body["total"] >= total else None

    body = await eventually(reached, timeout=60, what=f"{total} dead letters")
    assert body["total"] == total, body
    return body


async def end_offsets(brokers: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=brokers, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def fetch(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def test_bad_messages_are_listed_newest_first_by_reason_in_the_cli_and_over_http(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    openapi: OpenAPI,
    order_dict: Callable[..., dict[str, Any]],
) -> None:
    api = Api(http, await start_worker(), openapi)
    topic = pipeline_env["KAFKA_TOPIC"]
    invalid = orjson.dumps(order_dict({"order_uid": "wrong-amount", "payment.amount": 1}))
    binary = b"\x00\xff\xfe\x1b[31mred\\"
    sent = [(b"not json", b"k1"), (invalid, b"wrong-amount"), (binary, None)]
    for count, (value, key) in enumerate(sent, 1):
        # One at a time: each letter is newer than the one before.
        await producer.send_and_wait(topic, value, key=key)
        await wait_total(api, count)

    body = await api.letters()
    assert body["topic"] == f"{topic}.dlq"
    newest, middle, oldest = body["dead_letters"]
    assert [letter["reason"] for letter in body["dead_letters"]] == [
        "not_json",
        "invalid",
        "not_json",
    ]
    assert newest["timestamp"] >= middle["timestamp"] >= oldest["timestamp"]
    assert oldest["preview"] == "not json" and oldest["binary"] is False
    assert oldest["size"] == 8 and oldest["truncated"] is False and oldest["order_uid"] is None
    assert oldest["source"]["topic"] == topic and oldest["source"]["offset"] == 0
    assert oldest["replayed_from"] is None
    assert middle["order_uid"] == "wrong-amount"
    assert "payment.amount" in middle["error"]
    assert newest["binary"] is True
    assert newest["preview"] == "\\x00\\xff\\xfe\\x1b[31mred\\\\"  # escaped, nothing raw
    assert newest["size"] == len(binary)

    only_invalid = await api.letters(reason="invalid")
    assert only_invalid["total"] == 3
    assert [letter["order_uid"] for letter in only_invalid["dead_letters"]] == ["wrong-amount"]
    assert (await api.letters(limit="1"))["dead_letters"] == [newest]
    assert (await api.letters(reason="db_rejected"))["dead_letters"] == []

    as_json = orjson.loads(dlq(pipeline_env, "list", "--json").stdout)
    assert as_json == {**body, "dead_letters": body["dead_letters"][:3]}
    lines = dlq(pipeline_env, "list").stdout.splitlines()
    assert "3 dead letter(s)" in lines[0]
    first, second, third = lines[1:]
    assert f"offset={newest['offset']}" in first and f"partition={newest['partition']}" in first
    assert "reason=not_json" in first and "binary 12 bytes: \\x00\\xff\\xfe\\x1b[31mred" in first
    assert "\x1b" not in "".join(lines)  # no raw control character reaches the terminal
    assert "order_uid=wrong-amount" in second and "error=invalid: payment.amount" in second
    assert f"source={topic}:{oldest['source']['partition']}:0" in third
    assert "text 8 bytes: not json" in third
    filtered = dlq(pipeline_env, "list", "--reason", "invalid", "--limit", "5").stdout.splitlines()
    assert len(filtered) == 2 and "order_uid=wrong-amount" in filtered[1]
    assert dlq(pipeline_env, "list", "--limit", "1").stdout.splitlines()[1:] == [first]


async def test_a_replayed_letter_is_stored_once_however_often_it_is_replayed(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    openapi: OpenAPI,
    model_json: bytes,
) -> None:
    api = Api(http, await start_worker(), openapi)
    topic, database = pipeline_env["KAFKA_TOPIC"], pipeline_env["PG_URL"]
    uid = "b563feb7b2b84b6test"
    # A valid order PostgreSQL once refused, dead-lettered as the worker does (agents.py).
    await producer.send_and_wait(
        f"{topic}.dlq",
        model_json,
        key=uid.encode(),
        headers=[
            ("x-trace", b"kept"),
            ("x-source-topic", topic.encode()),
            ("x-source-partition", b"2"),
            ("x-source-offset", b"17"),
            ("x-error-reason", b"db_rejected"),
            ("x-error", b"PostgreSQL refused the order"),
        ],
    )
    [letter] = (await wait_total(api, 1))["dead_letters"]
    assert (letter["reason"], letter["order_uid"]) == ("db_rejected", uid)
    position = f"{letter['partition']}:{letter['offset']}"

    before = await end_offsets(pipeline_env["KAFKA_BROKERS"], topic)
    dry = dlq(pipeline_env, "replay", "--offset", position, "--dry-run").stdout.splitlines()
    assert dry == [
        f"would replay {position} (db_rejected, order_uid {uid}) -> {topic}",
        "would replay 1 dead letter(s)",
    ]
    status, body = await api.replay({"offsets": [position], "dry_run": True})
    assert (status, body["count"], body["replayed"][0]["to"]) == (
        200,
        1,
        {"topic": topic, "partition": None, "offset": None},
    )
    assert await end_offsets(pipeline_env["KAFKA_BROKERS"], topic) == before  # nothing sent

    first = dlq(pipeline_env, "replay", "--offset", position).stdout.splitlines()
    own = partition_of(uid.encode(), PARTITIONS)
    assert first[0].startswith(
        f"replayed {position} (db_rejected, order_uid {uid}) -> {topic}:{own}:"
    ), first
    assert first[1] == "replayed 1 dead letter(s)"

    async def stored() -> Any:
        return await fetch(database, "SELECT kafka_offset FROM orders WHERE order_uid = $1", uid)

    [row] = await eventually(stored, what="the replayed order in PostgreSQL")
    assert row["kafka_offset"] == int(first[0].rsplit(":", 1)[1])

    status, body = await api.replay({"offsets": [position]})
    assert status == 200 and body["count"] == 1 and body["skipped"] == []
    second = body["replayed"][0]["to"]
    assert (second["topic"], second["partition"]) == (topic, own)
    assert second["offset"] > row["kafka_offset"]

    # The second replay is stored too (the same order, a later version): still one order.
    async def restored() -> Any:
        rows = await stored()
        return rows if rows and rows[0]["kafka_offset"] == second["offset"] else None

    await eventually(restored, what="the second replay stored")
    counts = await fetch(
        database,
        "SELECT (SELECT count(*) FROM orders) AS orders, "
        "(SELECT count(*) FROM items) AS items, "
        "(SELECT count(*) FROM payments) AS payments",
    )
    assert dict(counts[0]) == {"orders": 1, "items": 1, "payments": 1}
    async with http.get(f"{api.worker.url}/order/{uid}", params={"nocache": "1"}) as reply:
        assert reply.status == 200
        assert orjson.loads(await reply.read()) == orjson.loads(model_json)

    # What went to the orders topic: the letter's key and value, its own headers, where from.
    consumer = AIOKafkaConsumer(bootstrap_servers=pipeline_env["KAFKA_BROKERS"], group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(topic, own)
        consumer.assign([tp])
        consumer.seek(tp, second["offset"])
        replayed = (await consumer.getmany(tp, timeout_ms=5000))[tp][0]
    finally:
        await consumer.stop()
    assert (replayed.key, replayed.value) == (uid.encode(), model_json)
    assert list(replayed.headers) == [
        ("x-trace", b"kept"),
        ("x-replayed-from", f"{topic}.dlq:{position}".encode()),
    ]
    assert (await api.letters())["total"] == 1  # nothing came back


async def test_a_replayed_message_still_bad_comes_back_once_per_replay(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    openapi: OpenAPI,
) -> None:
    api = Api(http, await start_worker(), openapi)
    topic = pipeline_env["KAFKA_TOPIC"]
    dead_letter_topic = f"{topic}.dlq"
    await producer.send_and_wait(topic, b"still not json", key=b"bad")
    [original] = (await wait_total(api, 1))["dead_letters"]

    first = dlq(pipeline_env, "replay", "--all").stdout.splitlines()
    assert first[-1] == "replayed 1 dead letter(s)", first
    [back, _] = (await wait_total(api, 2))["dead_letters"]
    assert back["reason"] == "not_json" and back["preview"] == "still not json"
    assert back["replayed_from"] == (
        f"{dead_letter_topic}:{original['partition']}:{original['offset']}"
    )
    assert back["source"]["topic"] == topic
    listed = dlq(pipeline_env, "list", "--limit", "1").stdout.splitlines()[1]
    assert f"replayed_from={back['replayed_from']}" in listed

    # Again: only the letter that came back is replayed, the original is skipped.
    second = dlq(pipeline_env, "replay", "--all").stdout.splitlines()
    assert second[0].startswith(f"replayed {back['partition']}:{back['offset']} (not_json")
    assert second[1].startswith(
        f"skipped {original['partition']}:{original['offset']}: replayed already"
    )
    assert second[-1] == "replayed 1 dead letter(s), skipped 1"
    [again, *_] = (await wait_total(api, 3))["dead_letters"]
    assert again["replayed_from"] == f"{dead_letter_topic}:{back['partition']}:{back['offset']}"

    status, body = await api.replay({"all": True, "reason": "not_json", "dry_run": True})
    assert status == 200 and body["count"] == 1 and len(body["skipped"]) == 2
    assert (body["replayed"][0]["partition"], body["replayed"][0]["offset"]) == (
        again["partition"],
        again["offset"],
    )
    assert (await api.letters())["total"] == 3


async def test_bad_requests_get_clear_refusals(
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    openapi: OpenAPI,
) -> None:
    worker = await start_worker(API_TOKENS=TOKEN)
    anonymous, api = Api(http, worker, openapi), Api(http, worker, openapi, TOKEN)
    env = {**pipeline_env, "API_TOKENS": TOKEN}
    for path, method in (("/api/dead-letters", "GET"), ("/api/dead-letters/replay", "POST")):
        status, body = await anonymous.call(method, path, body=b"{}" if method == "POST" else None)
        assert status == 401 and body["error"].startswith("authentication required")
        status, _ = await api.call(
            method,
            path,
            body=b"{}" if method == "POST" else None,
            headers={"Authorization": "Bearer wrong"},
        )
        assert status == 401
    assert (await api.letters())["total"] == 0

    for limit in ("0", "501", "abc", "1.5"):
        status, body = await api.call("GET", "/api/dead-letters", query={"limit": limit})
        assert status == 400 and "limit" in body["error"], limit
    status, body = await api.call(
        "POST", "/api/dead-letters/replay", body=b'{"all": true}', content_type="text/plain"
    )
    assert status == 415
    status, body = await api.call("POST", "/api/dead-letters/replay", body=b"{not json")
    assert (status, body) == (400, {"error": "the body is not JSON"})
    for request in (
        {},
        {"all": False},
        {"offsets": []},
        {"offsets": ["x"]},
        {"offsets": "0:1"},
        {"all": "yes"},
        {"everything": True},
        ["0:1"],
    ):
        status, body = await api.replay(request)
        assert status == 400, (request, body)
    status, body = await api.replay({"all": True})
    assert (status, body["error"]) == (404, "no dead letter to replay")

    await producer.send_and_wait(pipeline_env["KAFKA_TOPIC"], b"not json", key=b"k")
    [letter] = (await wait_total(api, 1))["dead_letters"]
    status, body = await api.replay(
        {
            "offsets": [
                f"{letter['partition']}:{letter['offset']}",
                f"{letter['partition']}:99",
                "99:0",
            ]
        }
    )
    assert status == 404
    assert body == {
        "error": "no dead letter at these offsets",
        "offsets": [f"{letter['partition']}:99", "99:0"],
    }
    status, body = await api.replay({"reason": "invalid"})
    assert (status, body["error"]) == (404, "no dead letter to replay with reason 'invalid'")

    failed = dlq_fails(env, "replay", "--offset", "0-1")
    assert failed.returncode == 1 and "expected PARTITION:OFFSET" in failed.stderr
    failed = dlq_fails(env, "replay", "--offset", "99:0", "--offset", f"{letter['partition']}:99")
    assert failed.stderr.strip() == (
        f"dlq replay: no dead letter at these offsets: {letter['partition']}:99, 99:0"
    )
    failed = dlq_fails(env, "replay")
    assert "nothing selected" in failed.stderr
    failed = dlq_fails(env, "replay", "--reason", "invalid")
    assert "no dead letter to replay with reason 'invalid'" in failed.stderr
    failed = dlq_fails(env, "list", "--all")
    assert failed.returncode == 2 and "options of replay" in failed.stderr
    assert "Traceback" not in worker.log()


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateStack]:
    """A broker of this module's own whose SASL_SSL listener is the only one the test uses."""
    stack = PrivateStack(tmp_path_factory.mktemp("secure-kafka"), secure=True)
    stack.kafka_up()
    yield stack
    stack.down()


async def test_list_and_replay_over_sasl_ssl(
    secure_broker: PrivateStack,
    start_worker: Any,
    pipeline_env: dict[str, str],
    http: aiohttp.ClientSession,
    openapi: OpenAPI,
) -> None:
    secured = secure_broker.secure_env("SASL_SSL", "SCRAM-SHA-512")
    env = {**pipeline_env, **secured}
    api = Api(http, await start_worker(**secured), openapi)
    orderstream_command("send", env["KAFKA_TOPIC"], "not json", env=env)
    [letter] = (await wait_total(api, 1))["dead_letters"]
    listed = orjson.loads(dlq(env, "list", "--json").stdout)
    assert listed["dead_letters"] == [letter] and letter["preview"] == "not json"

    replayed = dlq(env, "replay", "--offset", f"{letter['partition']}:{letter['offset']}")
    assert replayed.stdout.splitlines()[-1] == "replayed 1 dead letter(s)"
    [back, _] = (await wait_total(api, 2))["dead_letters"]
    assert back["replayed_from"] == (
        f"{env['KAFKA_TOPIC']}.dlq:{letter['partition']}:{letter['offset']}"
    )
    status, body = await api.replay({"offsets": [f"{back['partition']}:{back['offset']}"]})
    assert status == 200 and body["count"] == 1
    await wait_total(api, 3)
    password = secure_broker.sasl_user[1]
    assert password not in replayed.stdout + replayed.stderr
