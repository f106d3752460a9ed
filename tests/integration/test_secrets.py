"""No password or token in any log line, error message, metric or HTTP body.

Every secret given to a process here is registered (secrets_registry): at the end of the
session conftest.py also greps every log the suite wrote for them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from yarl import URL

from harness import REPO_ROOT, admin_execute
from orderstream.config import ConfigError, Settings
from orderstream.migrations import migrate_database
from orderstream.order.generator import random_orders

from ..conftest import SQL_DIR
from ..private_stack import PrivateStack
from ..secrets_registry import leaks_in, register_secret
from .test_pipeline import publish, wait_stored


def distinct(kind: str) -> str:
    """A secret no log would hold by chance, registered for the end-of-session grep."""
    return register_secret(f"{kind}-{uuid4().hex}")


# --- (a) start-up errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "postgres://u:{}@h:x/db",  # a port that is no number
        "mysql://u:{}@h/db",  # not PostgreSQL
        "postgres://u:{}@/db",  # no host
        "postgres://u:{}@h/db?sslmode=verify-full",  # TLS without a CA
        "postgres://u@h/db?sslmode=nope&sslpassword={}",  # the key's password in the query
    ],
)
def test_a_bad_pg_url_is_shown_without_its_password(template: str) -> None:
    password = distinct("hunter2")
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"PG_URL": template.format(password)})
    assert "***" in str(caught.value)
    assert password not in str(caught.value) and password not in caught.value.value


@pytest.mark.parametrize("name", ["KAFKA_SASL_PASSWORD", "API_TOKENS", "METRICS_TOKEN"])
def test_a_secret_setting_is_never_shown_even_if_a_reason_quotes_it(name: str) -> None:
    secret = distinct("tok")
    value = f"{secret},{secret}-2" if name == "API_TOKENS" else secret
    error = ConfigError(name, value, f"Not valid: {value!r} and {secret}-2 are refused.")
    assert str(error).startswith(f"Config {name!r} has value '***'. ")
    assert secret not in str(error) and secret not in error.value


def test_the_start_up_error_on_the_console_hides_the_password(tmp_path: Path) -> None:
    password = distinct("hunter2")
    env = {**os.environ, "PG_URL": f"postgres://postgres:{password}@127.0.0.1:x/orders"}
    done = subprocess.run(
        [sys.executable, "-m", "orderstream", "migrate"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "Config 'PG_URL' has value 'postgres://postgres:***@127.0.0.1:x/orders'" in done.stderr
    assert password not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


# --- (b) a worker given secrets at every door --------------------------------------------


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateStack]:
    """A broker of this module's own with a SCRAM user whose password is a registered secret."""
    password = register_secret(f"sasl-{uuid4().hex}")
    stack = PrivateStack(
        tmp_path_factory.mktemp("sasl"), secure=True, sasl_user=("orderstream", password)
    )
    stack.kafka_up()
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture
async def role_database(pg_server: str) -> Any:
    """A database owned by a role of its own whose password is a registered secret."""
    role, password = f"secret_{uuid4().hex[:8]}", distinct("pg-password")
    database = f"{role}_db"
    await admin_execute(pg_server, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    await admin_execute(pg_server, f'CREATE DATABASE "{database}" OWNER {role}')
    url = str(URL(pg_server).with_user(role).with_password(password).with_path(f"/{database}"))
    await asyncio.to_thread(migrate_database, url, SQL_DIR)
    yield url
    await admin_execute(pg_server, f'DROP DATABASE "{database}" WITH (FORCE)')
    await admin_execute(pg_server, f"DROP ROLE {role}")


async def test_a_working_worker_shows_no_secret_anywhere(
    sasl_broker: PrivateStack,
    role_database: str,
    start_worker: Any,
    pipeline_env: dict[str, str],
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    api_tokens = [distinct("api-token"), distinct("api-token")]
    metrics_token = distinct("metrics-token")
    wrong_token = distinct("wrong-token")
    pg_password = URL(role_database).password
    assert pg_password is not None
    secrets = [*api_tokens, metrics_token, wrong_token, pg_password, sasl_broker.sasl_user[1]]

    worker = await start_worker(
        PG_URL=role_database,
        API_TOKENS=",".join(api_tokens),
        METRICS_TOKEN=metrics_token,
        **sasl_broker.secure_env("SASL_PLAINTEXT", "SCRAM-SHA-256"),
    )
    orders = list(random_orders(21, 5))
    producer = AIOKafkaProducer(bootstrap_servers=sasl_broker.kafka_brokers, acks="all")
    await producer.start()
    try:
        await publish(producer, pipeline_env["KAFKA_TOPIC"], orders)
    finally:
        await producer.stop()
    await wait_stored(role_database, {o.order_uid for o in orders})

    answers: list[tuple[str, int, str]] = []

    async def get(path: str, token: str = "") -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with http.get(f"{worker.url}{path}", headers=headers) as reply:
            shown = f"{reply.headers!r}\n{await reply.text()}"
            answers.append((path, reply.status, shown))
            return reply.status

    uid = orders[0].order_uid
    assert await get(f"/order/{uid}", api_tokens[0]) == 200
    assert await get(f"/order/{uid}?nocache=1", api_tokens[1]) == 200
    assert await get("/order/no-such-order", api_tokens[0]) == 404
    assert await get("/order/bad%20id", api_tokens[0]) == 400
    assert await get(f"/order/{uid}", wrong_token) == 401
    assert await get(f"/order/{uid}") == 401
    assert await get("/metrics", metrics_token) == 200
    assert await get("/metrics", wrong_token) == 401
    assert await get("/ready") == 200
    for path in ("/health", "/", "/openapi.yaml", "/no/such/path"):
        await get(path)
    assert worker.stop() == 0

    for path, status, shown in answers:
        assert not [s for s in secrets if s in shown], (
            f"a secret in the answer to {path} ({status})"
        )
    log = worker.log()
    assert not [s for s in secrets if s in log], "a secret in the worker's log"
    assert leaks_in(tmp_path, secrets) == []
    # It did connect with them: the database URL is logged, with its password masked.
    assert f"{URL(role_database).user}:***@" in log
    # Faust's banner names the transport and the web server, without credentials.
    banner = [
        line
        for line in log.splitlines()
        if line.startswith("| transport") or line.startswith("| web ")
    ]
    assert len(banner) == 2 and not any("@" in line for line in banner), banner


def test_the_end_of_session_check_finds_a_secret_in_any_log(tmp_path: Path) -> None:
    """What conftest.py runs over every log: it must find a secret, even in broken UTF-8."""
    (tmp_path / "worker").mkdir()
    leaky = tmp_path / "worker" / "worker-0.log"
    leaky.write_bytes(b"started\n\xff\xfe connecting with not-registered-secret-1\n")
    (tmp_path / "notes.txt").write_text("not-registered-secret-1")  # not a log
    assert leaks_in(tmp_path, ["not-registered-secret-1", "not-registered-secret-2"]) == [
        (leaky, 2, "not-registered-secret-1")
    ]
