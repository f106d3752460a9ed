"""Schema migrations: the plain SQL files in sql/, applied by yoyo."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import psycopg
from psycopg.pq import Conninfo
from yarl import URL
from yoyo import get_backend, read_migrations


class MigrationConnectError(Exception):
    """`migrate` could not connect to PG_URL; the message never carries its password."""


@cache
def libpq_parameters() -> frozenset[str]:
    """Every connection parameter the installed libpq knows (sslmode, sslrootcert, sslcert,
    sslkey, sslpassword, sslcrl, sslcrldir, sslsni, ssl_min_protocol_version, ...)."""
    return frozenset(option.keyword.decode() for option in Conninfo.get_defaults())


def yoyo_url(pg_url: str) -> str:
    """PG_URL for yoyo, which names the driver in the scheme and hands the query to libpq.

    Every libpq parameter is passed on, the TLS ones above all; the others of PG_URL are
    run-time settings for asyncpg (say, search_path), which libpq would refuse.
    """
    url = URL(pg_url)
    known = libpq_parameters()
    return str(
        url.with_scheme("postgresql+psycopg").with_query(
            [(name, value) for name, value in url.query.items() if name in known]
        )
    )


def migrate_database(pg_url: str, sql_dir: Path, *, down: bool = False) -> list[str]:
    """Apply every pending migration (or roll back every applied one); return their ids."""
    migrations = read_migrations(str(sql_dir))
    # The backend owns a psycopg connection; leaving the block closes it (else it leaks until GC).
    with connected_backend(pg_url) as backend, backend.lock():
        if down:
            chosen = backend.to_rollback(migrations)
            backend.rollback_migrations(chosen)
        else:
            chosen = backend.to_apply(migrations)
            backend.apply_migrations(chosen)
    return [migration.id for migration in chosen]


def connected_backend(pg_url: str) -> Any:
    """yoyo's backend for PG_URL; a refused connection says whether TLS was the cause."""
    try:
        return get_backend(yoyo_url(pg_url))
    except psycopg.OperationalError as exc:
        hint = (
            " (check PG_URL's TLS parameters: sslmode, sslrootcert, sslcert, sslkey)"
            if "SSL" in str(exc)
            else ""
        )
        raise MigrationConnectError(f"cannot connect to PostgreSQL{hint}: {exc}") from exc
