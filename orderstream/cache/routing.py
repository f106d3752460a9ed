"""Lookups go to the worker that owns the order's cache partition: who that is, and asking it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import aiohttp
import faust
from aiohttp import web as aioweb
from yarl import URL

from .. import tracing

if TYPE_CHECKING:
    from ..app import OrderApp

logger = logging.getLogger(__name__)

# Set on a lookup forwarded to the key's owner, so the owner never forwards it again.
FORWARDED_HEADER = "X-Orderstream-Forwarded"
# What a routed lookup keeps from the owner's answer.
PASSED_HEADERS = ("X-Source", "X-Duration-ms", "X-Served-By")
FORWARD_TIMEOUT = aiohttp.ClientTimeout(total=5.0)
AUTHORIZATION = "Authorization"


class Owners:
    """Which other worker's web address serves each cache partition, per assignment.

    Read from the assignment's changelog distribution: the router's key_store needs the
    producer's topic metadata, which a worker that has not sent anything yet lacks. Faust
    replaces the distribution on each assignment, so the map is rebuilt when it changes
    instead of on every lookup.
    """

    def __init__(self, app: faust.App, table: faust.Table) -> None:
        self.app = app
        self.table = table
        self._distribution: object = None
        self._others: dict[int, URL] = {}

    def other_than_self(self, partition: int) -> URL | None:
        """The owner of ``partition`` if it is another worker; None if it is this one or unknown."""
        distribution = self.app.router.tables_metadata()
        if distribution is not self._distribution:
            changelog = self.table.changelog_topic.get_topic_name()
            own = self.app.conf.canonical_url
            self._others = {
                partition: url
                for address, partitions_by_topic in distribution.items()
                if not is_same_worker(url := URL(address), own)
                for partition in partitions_by_topic.get(changelog, ())
            }
            self._distribution = distribution
        return self._others.get(partition)


def is_same_worker(url: URL, own: URL) -> bool:
    return (url.host, url.port) == (own.host, own.port)


async def ask_owner(app: OrderApp, owner: URL, request: aioweb.Request) -> aioweb.Response | None:
    """Forward the lookup to the owner and keep its headers; None when it cannot answer.

    The caller's Authorization header goes along: the owner checks the same token against the
    same API_TOKENS, so no credential of the cluster's own exists to leak or rotate. An owner
    that refuses a token this worker accepted (API_TOKENS differ during a rolling change) is
    an owner that cannot answer: PostgreSQL is read instead.
    """
    target = owner.join(request.rel_url)
    headers = {FORWARDED_HEADER: "1"}
    if (authorization := request.headers.get(AUTHORIZATION)) is not None:
        headers[AUTHORIZATION] = authorization
    tracing.inject(headers)  # the owner's span continues this lookup's trace
    try:
        async with app.http_client.get(target, headers=headers, timeout=FORWARD_TIMEOUT) as reply:
            body = await reply.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        logger.warning("Lookup forward to %s failed, reading PostgreSQL: %r", owner, exc)
        return None
    if reply.status == 401:
        logger.warning(
            "Lookup forward to %s refused the token this worker accepted (do the "
            "workers' API_TOKENS differ?), reading PostgreSQL",
            owner,
        )
        return None
    if reply.status >= 500:
        return None
    headers = {name: reply.headers[name] for name in PASSED_HEADERS if name in reply.headers}
    return aioweb.Response(
        body=body, status=reply.status, content_type="application/json", headers=headers
    )
