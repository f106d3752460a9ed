"""Kafka over TLS and SASL: the worker, `send` and `produce` on real secured listeners.

One broker of this module's own (PrivateStack(secure=True)) has a SCRAM/PLAIN SASL_PLAINTEXT
listener, a mutual-TLS SSL listener and a SASL_SSL listener, with a CA made by stack.sh for it.
Each test points KAFKA_BROKERS at one listener only, so every client of the service has to
speak its protocol: the plain listener is never used by the service.
"""

from __future__ import annotations

import asyncio
import functools
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError

from harness import REPO_ROOT, Worker, eventually, orderstream_command
from orderstream import kafka_security
from orderstream.config import ConfigError, Settings

from ..private_stack import PrivateStack
from .test_pipeline import MODEL_UID, served_from, wait_stored


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateStack]:
    stack = PrivateStack(tmp_path_factory.mktemp("secure-kafka"), secure=True)
    stack.kafka_up()
    yield stack
    stack.down()


def assert_no_password(text: str, password: str) -> None:
    assert password not in text, "the SASL password appears in the output"


@pytest.mark.parametrize(
    "protocol, mechanism",
    [
        ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
        ("SSL", ""),  # the listener requires a client certificate: KAFKA_SSL_CERTFILE/KEYFILE
        ("SASL_SSL", "SCRAM-SHA-512"),
    ],
)
async def test_worker_send_and_produce_over_a_secured_listener(
    secure_broker: PrivateStack,
    start_worker: Any,
    pipeline_env: dict[str, str],
    http: aiohttp.ClientSession,
    model_json: bytes,
    protocol: str,
    mechanism: str,
) -> None:
    secured = secure_broker.secure_env(protocol, mechanism or "PLAIN")
    password = secure_broker.sasl_user[1]
    worker = await start_worker(**secured)
    env = {**pipeline_env, **secured}

    sent = orderstream_command("send", env["KAFKA_TOPIC"], model_json.decode(), env=env)
    produced = orderstream_command("produce", "-n", "3", env=env)
    uids = set(produced.stdout.split())
    assert len(uids) == 3
    await wait_stored(env["PG_URL"], uids | {MODEL_UID})
    for uid in uids | {MODEL_UID}:
        body = await eventually(
            functools.partial(served_from, http, worker, uid, "cache"),
            what=f"{uid} served from the cache over {protocol}",
        )
        assert orjson.loads(body)["order_uid"] == uid

    # The readiness watcher shares the batch producer's client: it reaches Kafka too.
    async def ready() -> bool:
        async with http.get(f"{worker.url}/ready") as reply:
            return reply.status == 200

    await eventually(ready, what="/ready over the secured listener")
    assert f"kafka://{secured['KAFKA_BROKERS']}" in worker.log()  # the banner's transport
    for output in (worker.log(), sent.stdout + sent.stderr, produced.stdout + produced.stderr):
        assert_no_password(output, password)


async def test_produce_with_plain_over_sasl_ssl(
    secure_broker: PrivateStack, pipeline_env: dict[str, str]
) -> None:
    """SASL PLAIN (what Confluent Cloud uses), read back on the broker's plain listener."""
    env = {**pipeline_env, **secure_broker.secure_env("SASL_SSL", "PLAIN")}
    produced = orderstream_command("produce", "-n", "2", env=env)
    uids = set(produced.stdout.split())
    assert len(uids) == 2
    consumer = AIOKafkaConsumer(
        env["KAFKA_TOPIC"],
        bootstrap_servers=secure_broker.kafka_brokers,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        found: set[str] = set()

        async def all_read() -> bool:
            batches = await consumer.getmany(timeout_ms=500)
            found.update(
                message.key.decode()
                for messages in batches.values()
                for message in messages
                if message.key
            )
            return uids <= found

        await eventually(all_read, what="the produced orders on the topic")
    finally:
        await consumer.stop()
    assert_no_password(produced.stdout + produced.stderr, secure_broker.sasl_user[1])


async def test_wrong_password_stops_the_worker_with_an_authentication_error(
    secure_broker: PrivateStack, pipeline_env: dict[str, str], tmp_path: Path
) -> None:
    """It exits with status 1 after one logged authentication error: no silent retry loop."""
    wrong = "not-the-Secret-42"
    env = {
        **pipeline_env,
        **secure_broker.secure_env("SASL_PLAINTEXT", "SCRAM-SHA-256"),
        "KAFKA_SASL_PASSWORD": wrong,
        "DATA_DIR": str(tmp_path / "data"),
    }
    worker = Worker(env, log_path=tmp_path / "worker.log").start()
    assert worker.process is not None
    deadline = time.monotonic() + 60
    while worker.process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    if worker.process.poll() is None:
        worker.kill()
        pytest.fail(f"the worker kept running with a wrong password:\n{worker.log_tail()}")
    log = worker.log()
    assert worker.process.returncode == 1, worker.log_tail()
    assert "SaslAuthenticationFailed" in log and "invalid credentials" in log, worker.log_tail()
    assert "Could not connect to Kafka at" in log and "KAFKA_SASL_PASSWORD" in log
    assert_no_password(log, wrong)


async def test_an_untrusted_broker_certificate_is_refused(
    secure_broker: PrivateStack, caplog: pytest.LogCaptureFixture
) -> None:
    """TLS verifies the broker: the system CAs do not sign the stack's own certificate."""
    env = secure_broker.secure_env("SASL_SSL", "SCRAM-SHA-256")
    del env["KAFKA_SSL_CAFILE"]
    settings = Settings.from_env(env)
    kafka_security.check(settings)  # a valid configuration, just not trusted by this broker

    admin = AIOKafkaAdminClient(
        bootstrap_servers=env["KAFKA_BROKERS"], **kafka_security.client_kwargs(settings)
    )
    try:
        with pytest.raises(KafkaConnectionError):
            await admin.start()
    finally:
        await admin.close()
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


# --- configuration errors name the variable -------------------------------------------------


def secured_settings_error(env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        kafka_security.check(Settings.from_env(env))
    return caught.value


@pytest.mark.parametrize(
    "env, name",
    [
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SCRAM"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_PASSWORD": "pw-1"},
            "KAFKA_SASL_USERNAME",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "u"},
            "KAFKA_SASL_PASSWORD",
        ),
        ({"KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "pw-1"}, "KAFKA_SASL_USERNAME"),
        ({"KAFKA_SASL_PASSWORD": "pw-1"}, "KAFKA_SASL_PASSWORD"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
            "KAFKA_SSL_CAFILE",
        ),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_USERNAME": "u",
                "KAFKA_SASL_PASSWORD": "pw-1",
                "KAFKA_SSL_CAFILE": __file__,
            },
            "KAFKA_SSL_CAFILE",
        ),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": __file__}, "KAFKA_SSL_CAFILE"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": __file__}, "KAFKA_SSL_CERTFILE"),
    ],
)
def test_a_configuration_that_cannot_connect_names_the_variable(
    env: dict[str, str], name: str
) -> None:
    error = secured_settings_error(env)
    assert error.name == name, str(error)
    assert name in str(error)
    assert "pw-1" not in str(error)


def test_a_key_without_its_certificate_is_refused(secure_broker: PrivateStack) -> None:
    error = secured_settings_error(
        {
            "KAFKA_SECURITY_PROTOCOL": "SSL",
            "KAFKA_SSL_KEYFILE": str(secure_broker.tls_dir / "client.key"),
        }
    )
    assert error.name == "KAFKA_SSL_KEYFILE"


def test_a_key_that_does_not_match_the_certificate_is_refused(secure_broker: PrivateStack) -> None:
    error = secured_settings_error(
        {
            "KAFKA_SECURITY_PROTOCOL": "SSL",
            "KAFKA_SSL_CERTFILE": str(secure_broker.tls_dir / "client.pem"),
            "KAFKA_SSL_KEYFILE": str(secure_broker.tls_dir / "ca.key"),
        }
    )
    assert error.name == "KAFKA_SSL_KEYFILE"


def test_an_encrypted_key_is_refused_instead_of_prompting(
    secure_broker: PrivateStack, tmp_path: Path
) -> None:
    encrypted = tmp_path / "client-encrypted.key"
    subprocess.run(
        [
            "openssl",
            "pkey",
            "-in",
            str(secure_broker.tls_dir / "client.key"),
            "-aes256",
            "-passout",
            "pass:key-pw",
            "-out",
            str(encrypted),
        ],
        check=True,
    )
    error = secured_settings_error(
        {
            "KAFKA_SECURITY_PROTOCOL": "SSL",
            "KAFKA_SSL_CERTFILE": str(secure_broker.tls_dir / "client.pem"),
            "KAFKA_SSL_KEYFILE": str(encrypted),
        }
    )
    assert error.name == "KAFKA_SSL_KEYFILE" and "unencrypted" in str(error)


def test_the_worker_does_not_start_on_a_bad_combination(tmp_path: Path) -> None:
    """The message of start-up names the variable; the password given is not repeated."""
    env = {
        "PATH": "/usr/bin:/bin",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_PASSWORD": "Secret-pw-77",
        "DATA_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "orderstream", "worker"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "KAFKA_SASL_USERNAME" in done.stderr and "SASL_SSL" in done.stderr, done.stderr
    assert "Secret-pw-77" not in done.stdout + done.stderr
