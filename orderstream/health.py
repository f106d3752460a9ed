"""Liveness and readiness: /health says the process runs, /ready that it can do its job."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from faust.tables.manager import TableManager

from . import kafka_watch
from .repo import DatabaseUnavailable

if TYPE_CHECKING:
    from .app import OrderApp

PING_TIMEOUT = 2.0


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


async def postgresql_check(app: OrderApp, timeout: float = PING_TIMEOUT) -> Check:
    try:
        await asyncio.wait_for(app.repo.ping(), timeout)
    except (TimeoutError, DatabaseUnavailable) as exc:
        # The kind of failure only: the driver's text can name hosts and ports, which an open
        # endpoint does not tell (the outage is in the log).
        # A timeout's cause is the cancelled ping (CancelledError), which says nothing.
        cause = exc if isinstance(exc, asyncio.TimeoutError) else exc.__cause__ or exc
        kind = type(cause).__name__
        return Check(False, f"PostgreSQL does not answer ({kind})")
    return Check(True, "answers")


def kafka_check() -> Check:
    if kafka_watch.OUTAGE.down:
        return Check(False, f"Kafka does not answer ({kafka_watch.OUTAGE.kind})")
    return Check(True, "answers")


def assignment_check(app: OrderApp) -> Check:
    if app.consumer_generation_id <= 0:
        return Check(False, "not yet a member of the consumer group")
    if app.rebalancing:
        return Check(False, "the consumer group is rebalancing")
    topic = app.orders_topic.get_topic_name()
    partitions = sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic)
    return Check(True, f"generation {app.consumer_generation_id}, {topic} partitions {partitions}")


def recovery_check(app: OrderApp) -> Check:
    if app.in_recovery or not cast(TableManager, app.tables).recovery.completed.is_set():
        return Check(False, "the cache table is being recovered")
    return Check(True, "recovered")


HEALTHY = b'{"status":"ok"}'


async def readiness(
    app: OrderApp, ping_timeout: float = PING_TIMEOUT
) -> tuple[bool, dict[str, Any]]:
    """Ready when PostgreSQL and Kafka answer, the partitions are assigned and the cache is
    recovered; the body lists each check. A broker outage fails readiness, not liveness:
    restarting cannot mend it. ``ping_timeout`` bounds the wait for PostgreSQL (the pipeline
    panel asks within its own deadline)."""
    checks = {
        "postgresql": await postgresql_check(app, ping_timeout),
        "kafka": kafka_check(),
        "kafka_assignment": assignment_check(app),
        "table_recovery": recovery_check(app),
    }
    is_ready = all(check.ok for check in checks.values())
    return is_ready, {
        "ready": is_ready,
        "checks": {name: {"ok": c.ok, "detail": c.detail} for name, c in checks.items()},
    }
