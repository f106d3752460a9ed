"""Shared fixtures for the test suite."""

import asyncio
import copy
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from yarl import URL

from harness import Worker, admin_execute
from orderstream.config import Settings
from orderstream.migrations import migrate_database
from orderstream.repo import OrderRepository

from .secrets_registry import leaks_in, registered_secrets

_SHARED_MODEL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "model.json"
# The copy at the repository's root (README's commands send it), checked against the shared one.
_LOCAL_MODEL = Path(__file__).resolve().parents[1] / "model.json"
_PATH_PART = re.compile(r"[^.\[\]]+")


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """After the last test: no log the suite wrote (worker logs, private stacks' logs, all
    ``*.log`` under pytest's base temp) holds a secret a test registered (secrets_registry)."""
    yield
    leaks = leaks_in(tmp_path_factory.getbasetemp(), registered_secrets())
    if leaks:
        # The report names the secret by its first characters only: CI logs are logs too.
        pytest.fail(
            "secrets found in logs the tests wrote:\n"
            + "\n".join(f"  {path}:{line}: {secret[:4]}..." for path, line, secret in leaks),
            pytrace=False,
        )


@pytest.fixture(scope="session")
def model_json() -> bytes:
    """The canonical order, byte for byte as shared/fixtures/model.json has it."""
    return (_SHARED_MODEL if _SHARED_MODEL.is_file() else _LOCAL_MODEL).read_bytes()


def _locate(data: Any, path: str) -> tuple[Any, Any]:
    """Return (container, key) for a path as errors spell it, e.g. ``items[0].price``."""
    *parents, last = (int(part) if part.isdigit() else part for part in _PATH_PART.findall(path))
    for part in parents:
        data = data[part]
    return data, last


@pytest.fixture
def order_dict(model_json: bytes) -> Callable[..., dict[str, Any]]:
    """Factory: a fresh model.json dict with values set (``{"items[0].sale": 101}``) or dropped."""
    model = orjson.loads(model_json)

    def build(
        overrides: Mapping[str, Any] | None = None, *, drop: Iterable[str] = ()
    ) -> dict[str, Any]:
        data: dict[str, Any] = copy.deepcopy(model)
        for path, value in (overrides or {}).items():
            container, key = _locate(data, path)
            container[key] = value
        for path in drop:
            container, key = _locate(data, path)
            del container[key]
        return data

    return build


# --- real services ----------------------------------------------------------------------
# The local stack (`make stack-up`) listens where Settings' defaults point; PG_URL and
# KAFKA_BROKERS in the environment point the tests elsewhere. A service that does not
# answer fails the tests that need it, loudly.

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
async def pg_server(settings: Settings) -> str:
    """The PostgreSQL server's URL, after proving it answers."""
    try:
        conn = await asyncpg.connect(settings.pg_url, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL does not answer at {settings.pg_url_redacted}: {exc!r}. "
            "Start it with `make stack-up`.",
            pytrace=False,
        )
    await conn.close()
    return settings.pg_url


@pytest.fixture(scope="session")
async def database_url(pg_server: str) -> Any:
    """A fresh database for this test session, migrated with the production sql/ files."""
    name = f"orderstream_test_{uuid4().hex[:12]}"
    await admin_execute(pg_server, f'CREATE DATABASE "{name}"')
    url = str(URL(pg_server).with_path(f"/{name}"))
    await asyncio.to_thread(migrate_database, url, SQL_DIR)
    yield url
    # A new connection: the outage test restarts PostgreSQL in between.
    await admin_execute(pg_server, f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
async def clean_database(database_url: str) -> str:
    """The session database with no orders in it."""
    await admin_execute(database_url, "TRUNCATE orders CASCADE")
    return database_url


@pytest.fixture
async def repo(clean_database: str) -> Any:
    """A connected repository on an empty database."""
    repository = OrderRepository(clean_database)
    await repository.connect()
    yield repository
    await repository.close()


@pytest.fixture(scope="session")
async def kafka_brokers(settings: Settings) -> str:
    """The broker list, after proving a real broker answers a metadata request."""
    brokers = ",".join(settings.kafka_brokers)
    admin = AIOKafkaAdminClient(bootstrap_servers=brokers, request_timeout_ms=10_000)
    try:
        await admin.start()
        await admin.list_topics()
    except Exception as exc:  # any failure to reach the broker ends the same way
        pytest.fail(
            f"Kafka does not answer at {brokers}: {exc!r}. Start it with `make stack-up`.",
            pytrace=False,
        )
    finally:
        await admin.close()
    return brokers


@pytest.fixture(scope="session")
async def producer(kafka_brokers: str) -> Any:
    """A plain aiokafka producer, as an outside service would publish orders."""
    client = AIOKafkaProducer(bootstrap_servers=kafka_brokers, acks="all")
    await client.start()
    yield client
    await client.stop()


@pytest.fixture
def unique_name() -> str:
    """A name no other test uses, for topics and consumer groups."""
    return f"test-{uuid4().hex[:12]}"


# --- the pipeline: worker processes on a topic and group of their own --------------------


@pytest.fixture(scope="session")
async def http() -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
def pipeline_env(
    clean_database: str, kafka_brokers: str, unique_name: str, tmp_path: Path
) -> dict[str, str]:
    """Environment for workers of one test: its own topics, consumer group and data dirs."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("KAFKA_", "PG_", "CACHE_", "HTTP_", "DLQ_", "BATCH_"))
    }
    return {
        **env,
        "PG_URL": clean_database,
        "KAFKA_BROKERS": kafka_brokers,
        "KAFKA_TOPIC": f"orders-{unique_name}",
        "KAFKA_GROUP_ID": f"group-{unique_name}",
        "KAFKA_PARTITIONS": "4",
        "BATCH_WAIT": "0.05",
    }


@pytest.fixture
async def start_worker(
    pipeline_env: dict[str, str], http: aiohttp.ClientSession, tmp_path: Path
) -> Any:
    """Factory: start a worker (settings overridable) and wait until it serves HTTP.

    Workers of one ``name`` share a data directory (a restart); others get their own,
    as RocksDB allows one process per directory.
    """
    workers: list[Worker] = []

    async def start(name: str = "", **overrides: str) -> Worker:
        name = name or f"worker-{len(workers)}"
        env = {**pipeline_env, "DATA_DIR": str(tmp_path / f"data-{name}"), **overrides}
        worker = Worker(env, log_path=tmp_path / f"{name}.log").start()
        workers.append(worker)
        await worker.wait_serving(http)
        return worker

    yield start
    for worker in workers:
        worker.stop()
