"""Schema migrations: the plain SQL files in sql/, applied by yoyo."""

from __future__ import annotations

from pathlib import Path

from yarl import URL
from yoyo import get_backend, read_migrations


def yoyo_url(pg_url: str) -> str:
    """yoyo names the driver in the scheme; asyncpg's URL options are not psycopg's."""
    url = URL(pg_url)
    return str(url.with_scheme("postgresql+psycopg").with_query(
        {k: v for k, v in url.query.items() if k == "sslmode"}))


def migrate_database(pg_url: str, sql_dir: Path, *, down: bool = False) -> list[str]:
    """Apply every pending migration (or roll back every applied one); return their ids."""
    migrations = read_migrations(str(sql_dir))
    # The backend owns a psycopg connection; leaving the block closes it (else it leaks until GC).
    with get_backend(yoyo_url(pg_url)) as backend, backend.lock():
        if down:
            chosen = backend.to_rollback(migrations)
            backend.rollback_migrations(chosen)
        else:
            chosen = backend.to_apply(migrations)
            backend.apply_migrations(chosen)
    return [migration.id for migration in chosen]
