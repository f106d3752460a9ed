"""Settings from the environment: the Go service's names and defaults; errors name the variable."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orderstream.config import ConfigError, Settings

GO_DEFAULTS = {  # the Go service's documented defaults, as its environment would spell them
    "HTTP_ADDR": ":8081",
    "PG_URL": "postgres://postgres:postgres@127.0.0.1:5432/orders?sslmode=disable",
    "KAFKA_BROKERS": "localhost:29092",
    "KAFKA_TOPIC": "orders",
    "KAFKA_GROUP_ID": "order-svc",
    "CACHE_ENABLED": "true",
    "CACHE_SIZE": "100000",
}


def test_defaults_are_the_go_services() -> None:
    settings = Settings.from_env({})
    assert settings.http_addr == ("0.0.0.0", 8081)
    assert settings.pg_url == GO_DEFAULTS["PG_URL"]
    assert settings.kafka_brokers == ("localhost:29092",)
    assert (settings.kafka_topic, settings.kafka_group_id) == ("orders", "order-svc")
    assert (settings.cache_enabled, settings.cache_size) == (True, 100_000)
    assert settings == Settings.from_env(GO_DEFAULTS)  # spelling them out changes nothing


def test_empty_values_mean_the_default() -> None:
    assert Settings.from_env({name: "" for name in GO_DEFAULTS}) == Settings()


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("Yes", True),
        ("yes", True),
        ("0", False),
        ("false", False),
        ("False", False),
        ("NO", False),
        ("no", False),
    ],
)
def test_cache_enabled_words(raw: str, expected: bool) -> None:
    assert Settings.from_env({"CACHE_ENABLED": raw}).cache_enabled is expected


@pytest.mark.parametrize("raw, expected", [("", True), ("1", True), ("0", False), ("off", False)])
def test_faust_fast_path_is_on_unless_turned_off(raw: str, expected: bool) -> None:
    assert Settings.from_env({"FAUST_FAST_PATH": raw}).faust_fast_path is expected


def test_cache_enabled_rejects_maybe() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CACHE_ENABLED": "maybe"})
    assert (caught.value.name, caught.value.value) == ("CACHE_ENABLED", "maybe")
    assert str(caught.value).startswith(
        "Config 'CACHE_ENABLED' has value 'maybe'. Not a valid bool"
    )


@pytest.mark.parametrize(
    "name, raw",
    [
        ("HTTP_ADDR", "8081"),
        ("HTTP_ADDR", ":0"),
        ("HTTP_ADDR", ":65536"),
        ("HTTP_ADDR", "h:http"),
        ("KAFKA_BROKERS", " , "),
        ("KAFKA_BROKERS", "127.0.0.1"),
        ("KAFKA_BROKERS", "a:9092,b:x"),
        ("PG_URL", "mysql://u@h/db"),
        ("PG_URL", "orders"),
        ("PG_URL", "postgres://u@h:abc/db"),
        ("CACHE_STORE", "redis://"),
        ("CACHE_STORE", "memory"),
        ("KAFKA_PARTITIONS", "0"),
        ("KAFKA_PARTITIONS", "-1"),
        ("KAFKA_PARTITIONS", "x"),
        ("PG_WRITE_CONNECTIONS", "0"),
        ("PG_WRITE_CONNECTIONS", "two"),
        ("PG_WRITE_CONNECTIONS", "4"),  # the whole default pool: none left for lookups
        ("FAUST_FAST_PATH", "fast"),
    ],
)
def test_invalid_value_names_the_variable(name: str, raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: raw})
    assert (caught.value.name, caught.value.value) == (name, raw)
    assert str(caught.value).startswith(f"Config {name!r} has value {raw!r}. ")


@pytest.mark.parametrize(
    "name, raw, reason",
    [
        ("KAFKA_PARTITIONS", "x", "Not a valid integer."),
        ("CACHE_SIZE", "1e5", "Not a valid integer."),
        ("BATCH_WAIT", "soon", "Not a valid number."),
        ("HTTP_ADDR", "host:", "Port '' is not a valid integer."),
    ],
)
def test_number_errors_read_like_starlette(name: str, raw: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: raw})
    assert str(caught.value) == f"Config {name!r} has value {raw!r}. {reason}"


def test_write_connections_leave_the_pool_a_connection_for_lookups() -> None:
    assert Settings.from_env({}).pg_write_connections == 2
    assert Settings.from_env({"PG_WRITE_CONNECTIONS": "3"}).pg_write_connections == 3
    assert Settings.from_env({"PG_POOL_SIZE": "8", "PG_WRITE_CONNECTIONS": "7"}).pg_pool_size == 8
    # 1 writer shares any pool, a pool of 1 included (the behaviour before the setting)
    assert Settings.from_env({"PG_POOL_SIZE": "1", "PG_WRITE_CONNECTIONS": "1"}).pg_pool_size == 1
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"PG_POOL_SIZE": "2"})  # with the default of 2 writers
    assert str(caught.value) == (
        "Config 'PG_WRITE_CONNECTIONS' has value '2'. Must be 1, or less than PG_POOL_SIZE (2): "
        "lookups need a connection while a batch is written."
    )


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgres://app:s3cret@db:5432/orders", "postgres://app:***@db:5432/orders"),
        ("postgres://app@db/orders", "postgres://app@db/orders"),
    ],
)
def test_pg_url_redacted_hides_the_password(url: str, shown: str) -> None:
    assert Settings(pg_url=url).pg_url_redacted == shown


@pytest.mark.parametrize(
    "env, topic",
    [
        ({}, "orders.dlq"),
        ({"KAFKA_TOPIC": "payments"}, "payments.dlq"),
        ({"KAFKA_TOPIC": "payments", "DLQ_TOPIC": "rejects"}, "rejects"),
    ],
)
def test_dead_letter_topic(env: dict[str, str], topic: str) -> None:
    assert Settings.from_env(env).dead_letter_topic == topic


def test_invalid_setting_stops_the_cli_before_any_work(tmp_path: Path) -> None:
    # Nothing listens on port 1: reaching the database would fail with another message.
    env = {
        **os.environ,
        "CACHE_ENABLED": "maybe",
        "PG_URL": "postgres://postgres:postgres@127.0.0.1:1/orders",
    }
    done = subprocess.run(
        [sys.executable, "-m", "orderstream", "migrate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "Config 'CACHE_ENABLED' has value 'maybe'" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # no data directory either


@pytest.mark.parametrize("document", [".env.example", "README.md"])
def test_every_setting_is_documented(document: str) -> None:
    text = (Path(__file__).resolve().parents[2] / document).read_text()
    missing = [f.name.upper() for f in dataclasses.fields(Settings) if f.name.upper() not in text]
    assert missing == []
