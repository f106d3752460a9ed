"""PostgreSQL over TLS: PG_URL's libpq TLS parameters, honoured by the worker and by `migrate`.

The server is one of this module's own (tests/private_stack.py, stack.sh PG_TLS=on): ssl = on
with a certificate for localhost/127.0.0.1 signed by a CA made for it, and a role that may
log in only with a client certificate (pg_hba `hostssl ... cert`). Every other role keeps
its password, so the tests' own admin connections need no TLS.
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
import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from yarl import URL

from harness import REPO_ROOT, admin_execute
from orderstream.config import ConfigError, Settings
from orderstream.migrations import MigrationConnectError, migrate_database, yoyo_url
from orderstream.order.generator import random_orders
from orderstream.pg_tls import TLS_PARAMETERS
from orderstream.repo import DatabaseUnavailable, OrderRepository

from ..conftest import SQL_DIR
from ..private_stack import PrivateStack
from ..secrets_registry import register_secret
from .test_pipeline import publish, wait_stored

CERT_USER = "orderstream_cert"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateStack]:
    stack = PrivateStack(tmp_path_factory.mktemp("pg-tls"), pg_tls=True, pg_cert_user=CERT_USER)
    stack.pg_up()
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture
async def tls_database(tls_server: PrivateStack) -> str:
    """An empty database on the TLS server, owned by the certificate role (it may migrate)."""
    name = f"tls_{uuid4().hex[:10]}"
    await admin_execute(tls_server.pg_url, f'CREATE DATABASE "{name}" OWNER {CERT_USER}')
    return name


def admin_url(server: PrivateStack, database: str) -> str:
    """The superuser over plain TCP with its password: for the tests' own checks."""
    return str(URL(server.pg_url).with_path(f"/{database}"))


def migrate_command(pg_url: str) -> subprocess.CompletedProcess[str]:
    """`python -m orderstream migrate` (= `faust -A orderstream migrate`) with PG_URL."""
    return subprocess.run(
        [sys.executable, "-m", "orderstream", "migrate"],
        env={**os.environ, "PG_URL": pg_url},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def tls_sessions(url: str, application_name: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(
            "SELECT s.ssl, s.version, s.client_dn, a.usename FROM pg_stat_ssl s "
            "JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
            application_name,
        )
    finally:
        await conn.close()


async def test_worker_and_migrate_over_verify_full_with_a_client_certificate(
    tls_server: PrivateStack,
    tls_database: str,
    start_worker: Any,
    pipeline_env: dict[str, str],
    producer: AIOKafkaProducer,
    http: aiohttp.ClientSession,
) -> None:
    tls_dir = tls_server.pg_tls_dir
    application = f"orderstream-{uuid4().hex[:8]}"
    url = tls_server.pg_tls_url(
        tls_database,
        user=CERT_USER,
        sslcert=str(tls_dir / "client.crt"),
        sslkey=str(tls_dir / "client.key"),
        application_name=application,
    )
    migrated = migrate_command(url)
    assert migrated.returncode == 0, migrated.stderr
    migrations = sorted(
        p.stem for p in (REPO_ROOT / "sql").glob("*.sql") if not p.name.endswith(".rollback.sql")
    )
    assert f"applied {len(migrations)} migration(s): {', '.join(migrations)}" in migrated.stdout

    worker = await start_worker(PG_URL=url)
    orders = list(random_orders(11, 5))
    await publish(producer, pipeline_env["KAFKA_TOPIC"], orders)
    await wait_stored(admin_url(tls_server, tls_database), {o.order_uid for o in orders})
    async with http.get(f"{worker.url}/order/{orders[0].order_uid}?nocache=1") as reply:
        assert reply.status == 200
        assert (await reply.json())["order_uid"] == orders[0].order_uid

    # The worker's own connections (its pool keeps them) are encrypted, and it logged in
    # with its certificate.
    sessions = await tls_sessions(admin_url(tls_server, tls_database), application)
    assert sessions, "the worker keeps no connection to PostgreSQL"
    assert {(row["ssl"], row["client_dn"], row["usename"]) for row in sessions} == {
        (True, f"/CN={CERT_USER}", CERT_USER)
    }
    assert all(row["version"].startswith("TLSv1.") for row in sessions), sessions

    # Without its certificate the role is refused, by both.
    bare = tls_server.pg_tls_url(tls_database, user=CERT_USER)
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="certificate"):
        await asyncpg.connect(bare)
    with pytest.raises(MigrationConnectError, match="certificate"):
        await asyncio.to_thread(migrate_database, bare, SQL_DIR)


async def test_every_tls_parameter_reaches_both_drivers(
    tls_server: PrivateStack, tls_database: str
) -> None:
    """Parameters asyncpg alone would send to the server as settings (sslcertmode, sslsni,
    sslcompression) or not know (sslcrldir), over a password login with verify-full."""
    application = f"orderstream-params-{uuid4().hex[:8]}"
    params = {
        "sslcertmode": "allow",
        "sslsni": "1",
        "sslcompression": "0",
        "ssl_min_protocol_version": "TLSv1.2",
        "ssl_max_protocol_version": "TLSv1.3",
        "application_name": application,
    }
    url = tls_server.pg_tls_url(tls_database, **params)
    assert await asyncio.to_thread(migrate_database, url, SQL_DIR)
    repo = OrderRepository(url)
    await repo.connect()
    try:
        await repo.upsert_many(list(random_orders(12, 3)))
        sessions = await tls_sessions(admin_url(tls_server, tls_database), application)
    finally:
        await repo.close()
    assert [(r["ssl"], r["version"]) for r in sessions] == [(True, "TLSv1.3")]

    # An empty directory of revocation lists is honoured: no CRL for the CA, no connection.
    crls = tls_server.pg_tls_dir / "crls"
    crls.mkdir(exist_ok=True)
    strict = tls_server.pg_tls_url(tls_database, sslcrldir=str(crls), **params)
    with pytest.raises(MigrationConnectError, match="certificate verify failed"):
        await asyncio.to_thread(migrate_database, strict, SQL_DIR)
    repo = OrderRepository(strict)
    await repo.connect()
    try:
        with pytest.raises(DatabaseUnavailable, match="CRL"):
            await repo.ping()
    finally:
        await repo.close()


async def test_a_wrong_ca_is_refused_with_an_error_naming_tls(
    tls_server: PrivateStack, tls_database: str, tmp_path: Path
) -> None:
    password = register_secret(f"pw-{uuid4().hex}")
    role = f"pw_{uuid4().hex[:8]}"
    await admin_execute(tls_server.pg_url, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    other_ca = tmp_path / "other-ca.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=not the server's CA",
            "-keyout",
            str(tmp_path / "other-ca.key"),
            "-out",
            str(other_ca),
        ],
        check=True,
        capture_output=True,
    )
    url = tls_server.pg_tls_url(tls_database, user=f"{role}:{password}", sslrootcert=str(other_ca))

    migrated = migrate_command(url)
    assert migrated.returncode != 0
    last_line = migrated.stderr.strip().splitlines()[-1]
    assert "PG_URL's TLS parameters" in last_line and "certificate verify failed" in last_line
    assert password not in migrated.stdout + migrated.stderr

    repo = OrderRepository(url)
    await repo.connect()
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            await repo.ping()
    finally:
        await repo.close()
    assert "PG_URL's sslmode, sslrootcert" in str(caught.value)
    assert "self-signed certificate" in str(caught.value) or "issuer" in str(caught.value)
    assert password not in str(caught.value)


async def test_sslmode_require_refuses_a_server_without_tls(
    settings: Settings, pg_server: str
) -> None:
    # The shared stack's PostgreSQL runs without TLS.
    url = str(URL(pg_server).update_query(sslmode="require"))
    with pytest.raises(MigrationConnectError, match="SSL"):
        await asyncio.to_thread(migrate_database, url, SQL_DIR)
    repo = OrderRepository(url)
    await repo.connect()
    try:
        with pytest.raises(DatabaseUnavailable, match="rejected SSL"):
            await repo.ping()
    finally:
        await repo.close()


@pytest.mark.parametrize(
    "query, reason",
    [
        (
            "sslmode=verify-full&sslrootcert=/nonexistent/ca.crt",
            "sslrootcert=/nonexistent/ca.crt cannot be used",
        ),
        ("sslmode=verify-ca", "sslmode=verify-ca needs sslrootcert"),
        ("sslmode=bogus", "sslmode=bogus: expected disable"),
        ("sslmode=require&ssl_min_protocol_version=SSLv3", "ssl_min_protocol_version=SSLv3"),
        ("sslrootcert=system&sslmode=require", "sslrootcert=system needs sslmode=verify-full"),
    ],
)
def test_unusable_tls_parameters_stop_start_up(query: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"PG_URL": f"postgres://app:hunter2-tls@db:5432/orders?{query}"})
    assert reason in str(caught.value)
    assert "hunter2-tls" not in str(caught.value)


def test_migrate_hands_every_libpq_tls_parameter_to_libpq() -> None:
    query = {name: f"value-{index}" for index, name in enumerate(sorted(TLS_PARAMETERS))}
    url = URL(
        yoyo_url(
            str(
                URL("postgres://u:p@db:5432/orders").with_query(
                    {**query, "search_path": "asyncpg-only"}
                )
            )
        )
    )
    assert dict(url.query) == query
