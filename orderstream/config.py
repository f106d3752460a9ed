"""Settings read once from the environment (and ./.env); the only place that reads os.environ."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from dotenv import load_dotenv
from yarl import URL

from .pg_tls import TlsSettingError, asyncpg_arguments
from .redaction import MASK, mask_url, secrets_in, shown_value

T = TypeVar("T")

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


# The file of KEY=VALUE lines read into the environment at start; ENV_FILE names another one,
# and ENV_FILE= (empty) none.
ENV_FILE = ".env"


def load_env_file(env: Mapping[str, str] | None = None) -> Path | None:
    """Add the variables of the .env file to the environment, as the Go service (godotenv)
    and docker compose do; a variable the environment sets already keeps its value.

    The path comes from ``ENV_FILE`` (default ``./.env``, relative to the working directory);
    a missing file is no error. Returns the file read, if any.
    """
    env = os.environ if env is None else env
    name = env.get("ENV_FILE", ENV_FILE)
    if not name or not Path(name).is_file():
        return None
    load_dotenv(name, override=False)
    return Path(name)


def asset(name: str) -> Path:
    """web/, sql/ or openapi.yaml: the copy an installed package carries in orderstream/_assets/
    (setup.py puts it there), else the file at the top of the checkout (an editable install)."""
    packaged = resources.files(__package__ or "orderstream") / "_assets" / name
    if isinstance(packaged, Path) and packaged.exists():
        return packaged
    return Path(__file__).resolve().parent.parent / name


class ConfigError(ValueError):
    """An environment variable has a value the service cannot use.

    The message (and ``value``) never carries a secret: *_PASSWORD and *_TOKEN(S) values
    are shown as ***, and PG_URL without its password, even where the reason quotes it.
    """

    def __init__(self, name: str, value: str, reason: str) -> None:
        shown = shown_value(name, value)
        if shown != value:
            reason = reason.replace(value, shown)
            for secret in secrets_in(name, value):
                reason = reason.replace(secret, MASK)
        super().__init__(f"Config {name!r} has value {shown!r}. {reason}")
        self.name = name
        self.value = shown


def parse_bool(raw: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError("Not a valid bool (use true/false, 1/0, yes/no, on/off).")


def parse_int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("Not a valid integer.") from None


def parse_positive_int(raw: str) -> int:
    value = parse_int(raw)
    if value < 1:
        raise ValueError("Must be a positive integer.")
    return value


def parse_non_negative_int(raw: str) -> int:
    value = parse_int(raw)
    if value < 0:
        raise ValueError("Must be zero or a positive integer.")
    return value


def parse_standby_read_max_lag(raw: str) -> int | None:
    if raw.strip().lower() == "off":
        return None
    try:
        return parse_non_negative_int(raw)
    except ValueError:
        raise ValueError("Use a whole number of messages, 0 or more, or off.") from None


def parse_positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("Not a valid number.") from None
    if not value > 0:
        raise ValueError("Must be a positive number.")
    return value


def parse_non_negative_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("Not a valid number.") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError("Must be zero or a positive number.")
    return value


def parse_http_addr(raw: str) -> tuple[str, int]:
    """Split Go-style ``host:port`` (``:8081`` means every interface)."""
    host, sep, port_text = raw.rpartition(":")
    if not sep:
        raise ValueError("Expected host:port, for example :8081 or 127.0.0.1:8081.")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"Port {port_text!r} is not a valid integer.") from None
    if not 0 < port < 65536:
        raise ValueError("Port must be between 1 and 65535.")
    return host.strip("[]") or "0.0.0.0", port


def parse_brokers(raw: str) -> tuple[str, ...]:
    brokers = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not brokers:
        raise ValueError("Expected a comma-separated list of host:port.")
    for broker in brokers:
        parse_http_addr(broker)
    return brokers


def parse_pg_url(raw: str) -> str:
    """A postgres:// URL whose TLS parameters can be used (files readable, values known)."""
    try:
        url = URL(raw)
        _ = url.port  # a port that is no number raises here
    except ValueError:
        url = URL()
    if url.scheme not in ("postgres", "postgresql") or not url.host:
        raise ValueError("Expected postgres://user:password@host:port/database.")
    try:
        asyncpg_arguments(raw)
    except TlsSettingError as exc:
        raise ValueError(f"TLS: {exc}.") from None
    return raw


def parse_store(raw: str) -> str:
    if raw not in ("rocksdb://", "memory://"):
        raise ValueError("Expected rocksdb:// or memory://.")
    return raw


def parse_topic(raw: str) -> str:
    if not raw or len(raw) > 200 or not all(c.isalnum() or c in "._-" for c in raw):
        raise ValueError("Expected a Kafka topic name: letters, digits, '.', '_', '-'.")
    return raw


def parse_log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("Expected debug, info, warning, error or critical.")
    return level


def parse_log_format(raw: str) -> str:
    if raw not in ("text", "json"):
        raise ValueError("Expected text or json.")
    return raw


def parse_tokens(raw: str) -> tuple[str, ...]:
    """Comma-separated bearer tokens; blanks around them are ignored."""
    return tuple(token.strip() for token in raw.split(",") if token.strip())


def parse_security_protocol(raw: str) -> str:
    protocol = raw.strip().upper()
    if protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
        raise ValueError("Expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    return protocol


def parse_sasl_mechanism(raw: str) -> str:
    mechanism = raw.strip().upper()
    if mechanism not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        raise ValueError("Expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    return mechanism


# OpenTelemetry (README "Tracing"): the standard variables, checked here like every setting.
OTEL_EXPORTERS = ("otlp", "console")
OTEL_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


def parse_otel_exporters(raw: str) -> tuple[str, ...]:
    """OTEL_TRACES_EXPORTER: otlp, console, both (comma-separated) or none (tracing off)."""
    names = tuple(dict.fromkeys(part.strip().lower() for part in raw.split(",") if part.strip()))
    if names == ("none",):
        return ()
    if not names or not set(names) <= set(OTEL_EXPORTERS):
        raise ValueError("Expected otlp, console, otlp,console or none.")
    return names


def parse_otel_sampler(raw: str) -> str:
    sampler = raw.strip().lower()
    if sampler not in OTEL_SAMPLERS:
        raise ValueError(f"Expected one of {', '.join(OTEL_SAMPLERS)}.")
    return sampler


def parse_ratio(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("Not a valid number.") from None
    if not 0 <= value <= 1:
        raise ValueError("Expected a sampling ratio from 0 to 1.")
    return value


def parse_otlp_endpoint(raw: str) -> str:
    try:
        url = URL(raw.strip())
        _ = url.port  # a port that is no number raises here
    except ValueError:
        url = URL()
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("Expected an http:// or https:// URL, e.g. http://localhost:4318.")
    return raw.strip()


def parse_otlp_protocol(raw: str) -> str:
    if raw.strip() != "http/protobuf":
        raise ValueError("Only http/protobuf is supported (OTLP over HTTP, port 4318).")
    return raw.strip()


@dataclass(frozen=True)
class Settings:
    """Everything the service can be told, with the Go service's names and defaults."""

    http_addr: tuple[str, int] = ("0.0.0.0", 8081)
    pg_url: str = field(
        default="postgres://postgres:postgres@127.0.0.1:5432/orders?sslmode=disable", repr=False
    )
    kafka_brokers: tuple[str, ...] = ("localhost:29092",)
    kafka_topic: str = "orders"
    kafka_group_id: str = "order-svc"
    kafka_partitions: int = 8
    dlq_topic: str = ""  # empty: "<kafka_topic>.dlq"
    cache_enabled: bool = True
    cache_store: str = "rocksdb://"
    cache_size: int = 100_000
    cache_standby_replicas: int = 1
    # Changelog messages a standby copy may lack and still answer a lookup; None: never.
    standby_read_max_lag: int | None = 0
    # The negative cache of lookups (cache/negative.py): order_uids PostgreSQL did not have,
    # at most this many, each for this many seconds; 0 turns it off.
    negative_cache_size: int = 20_000
    negative_cache_ttl: float = 30.0
    data_dir: Path = Path("orderstream-data")
    batch_size: int = 500
    batch_wait: float = 0.2
    # Faust with orderstream/fastpath.py (False: stock Faust's per-message path).
    faust_fast_path: bool = True
    pg_pool_size: int = 4
    # Connections one batch is written on at once, split by partition (agents.py): 1, or fewer
    # than pg_pool_size so lookups keep a connection while a batch is written.
    pg_write_connections: int = 2
    db_retry_max: float = 5.0
    shutdown_timeout: float = 20.0
    # HTTP limits (issue 10): connections served at once, seconds to send a request's
    # headers, seconds an idle keep-alive connection is kept.
    http_max_connections: int = 1000
    http_header_timeout: float = 10.0
    http_idle_timeout: float = 75.0
    # Seconds a date_created may lie ahead of this clock before the order is invalid.
    max_clock_skew: float = 300.0
    # Replicas of each topic the service creates; 0 = the broker's default.
    kafka_replication_factor: int = 0
    # RocksDB memory and disk bounds for the cache Table, in MiB.
    rocksdb_write_buffer_mb: int = 4
    rocksdb_block_cache_mb: int = 16
    rocksdb_max_wal_mb: int = 16
    # Security (issue 11): bearer tokens for the API and for /metrics (empty: no auth), and
    # how to reach a secured Kafka. Secrets are kept out of repr().
    api_tokens: tuple[str, ...] = field(default=(), repr=False)
    metrics_token: str = field(default="", repr=False)
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    log_level: str = "INFO"
    log_format: str = "text"
    # Tracing (orderstream/tracing.py): off unless OTEL_TRACES_EXPORTER names an exporter.
    # The OTLP endpoint and protocol are checked here; the exporter reads them, and its other
    # OTEL_EXPORTER_OTLP_* variables, from the environment itself (.env included).
    otel_traces_exporter: tuple[str, ...] = ()
    otel_service_name: str = "orderstream"
    otel_traces_sampler: str = "parentbased_always_on"
    otel_traces_sampler_arg: float = 1.0
    otel_exporter_otlp_endpoint: str = ""
    otel_exporter_otlp_protocol: str = "http/protobuf"
    otel_sdk_disabled: bool = False
    web_dir: Path = asset("web")
    sql_dir: Path = asset("sql")
    openapi_file: Path = asset("openapi.yaml")

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.kafka_topic}.dlq"

    @property
    def kafka_url(self) -> str:
        return ";".join(f"kafka://{broker}" for broker in self.kafka_brokers)

    @property
    def pg_url_redacted(self) -> str:
        return mask_url(self.pg_url)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``env``; an invalid value raises ConfigError naming it."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for spec in fields(cls):
            name = spec.name.upper()
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            parser = PARSERS[spec.name]
            try:
                values[spec.name] = parser(raw)
            except ValueError as exc:
                # Our parsers word their reasons as sentences; a library's message gets wrapped.
                reason = str(exc) if str(exc)[:1].isupper() else f"Not valid: {exc}."
                raise ConfigError(name, raw, reason) from exc
        settings = cls(**values)
        check_write_connections(settings)
        return settings


def check_write_connections(settings: Settings) -> None:
    """PG_WRITE_CONNECTIONS must leave a connection of the pool to lookups (and /ready's
    check) while a batch is written; 1, today's single writer, shares the pool as ever."""
    writers, pool = settings.pg_write_connections, settings.pg_pool_size
    if writers > 1 and writers >= pool:
        raise ConfigError(
            "PG_WRITE_CONNECTIONS",
            str(writers),
            f"Must be 1, or less than PG_POOL_SIZE ({pool}): lookups need a connection "
            "while a batch is written.",
        )


PARSERS: dict[str, Callable[[str], object]] = {
    "http_addr": parse_http_addr,
    "pg_url": parse_pg_url,
    "kafka_brokers": parse_brokers,
    "kafka_topic": parse_topic,
    "kafka_group_id": parse_topic,
    "kafka_partitions": parse_positive_int,
    "dlq_topic": parse_topic,
    "cache_enabled": parse_bool,
    "cache_store": parse_store,
    "cache_size": parse_positive_int,
    "cache_standby_replicas": parse_non_negative_int,
    "standby_read_max_lag": parse_standby_read_max_lag,
    "negative_cache_size": parse_non_negative_int,
    "negative_cache_ttl": parse_non_negative_float,
    "data_dir": Path,
    "batch_size": parse_positive_int,
    "batch_wait": parse_positive_float,
    "faust_fast_path": parse_bool,
    "pg_pool_size": parse_positive_int,
    "pg_write_connections": parse_positive_int,
    "db_retry_max": parse_positive_float,
    "shutdown_timeout": parse_positive_float,
    "http_max_connections": parse_positive_int,
    "http_header_timeout": parse_positive_float,
    "http_idle_timeout": parse_positive_float,
    "max_clock_skew": parse_non_negative_float,
    "kafka_replication_factor": parse_non_negative_int,
    "rocksdb_write_buffer_mb": parse_positive_int,
    "rocksdb_block_cache_mb": parse_positive_int,
    "rocksdb_max_wal_mb": parse_positive_int,
    "api_tokens": parse_tokens,
    "metrics_token": str,
    "kafka_security_protocol": parse_security_protocol,
    "kafka_sasl_mechanism": parse_sasl_mechanism,
    "kafka_sasl_username": str,
    "kafka_sasl_password": str,
    "kafka_ssl_cafile": str,
    "kafka_ssl_certfile": str,
    "kafka_ssl_keyfile": str,
    "log_level": parse_log_level,
    "log_format": parse_log_format,
    "otel_traces_exporter": parse_otel_exporters,
    "otel_service_name": str,
    "otel_traces_sampler": parse_otel_sampler,
    "otel_traces_sampler_arg": parse_ratio,
    "otel_exporter_otlp_endpoint": parse_otlp_endpoint,
    "otel_exporter_otlp_protocol": parse_otlp_protocol,
    "otel_sdk_disabled": parse_bool,
    "web_dir": Path,
    "sql_dir": Path,
    "openapi_file": Path,
}
