"""HTTP handlers on Faust's web server: order lookup, the page and its assets, JSON errors.

With API_TOKENS set, the order lookup answers only requests with one of the tokens
(auth.py); /metrics likewise with METRICS_TOKEN. The page, its assets, /health, /ready and
/openapi.yaml stay open: they reveal no order.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Awaitable, Callable, Mapping, Optional, cast

import aiohttp
import orjson
from aiohttp import web as aioweb
from aiohttp.web_urldispatcher import DynamicResource, PlainResource
from faust.web import Request, Response, View
from faust.web.drivers.aiohttp import Web as AiohttpWeb
from prometheus_client import generate_latest
from yarl import URL

from . import auth, metrics, webserver
from .app import app, settings
from .models import ORDER_UID_MAX_LENGTH, is_valid_order_uid
from .repo import DatabaseUnavailable
from .tables import order_cache, partition_of, recent_orders

logger = logging.getLogger(__name__)

# Set on a lookup forwarded to the key's owner, so the owner never forwards it again.
FORWARDED_HEADER = "X-Orderstream-Forwarded"
# What a routed lookup keeps from the owner's answer.
PASSED_HEADERS = ("X-Source", "X-Duration-ms", "X-Served-By")
FORWARD_TIMEOUT = aiohttp.ClientTimeout(total=5.0)
ORDER_ROUTE = "/order/{order_uid}"
AUTHORIZATION = "Authorization"

api_tokens = auth.BearerTokens(settings.api_tokens)
metrics_tokens = auth.BearerTokens((settings.metrics_token,))


def error_body(message: str, **details: str) -> bytes:
    return orjson.dumps({"error": message, **details})


class Owners:
    """Which other worker's web address serves each cache partition, per assignment.

    Read from the assignment's changelog distribution: the router's key_store needs the
    producer's topic metadata, which a worker that has not sent anything yet lacks. Faust
    replaces the distribution on each assignment, so the map is rebuilt when it changes
    instead of on every lookup.
    """

    def __init__(self) -> None:
        self._distribution: object = None
        self._others: dict[int, URL] = {}

    def other_than_self(self, partition: int) -> Optional[URL]:
        """The owner of ``partition`` if it is another worker; None if it is this one or unknown."""
        distribution = app.router.tables_metadata()
        if distribution is not self._distribution:
            changelog = order_cache.changelog_topic.get_topic_name()
            self._others = {partition: url
                            for address, partitions_by_topic in distribution.items()
                            if not is_self(url := URL(address))
                            for partition in partitions_by_topic.get(changelog, ())}
            self._distribution = distribution
        return self._others.get(partition)


owners = Owners()


def is_self(url: URL) -> bool:
    own = app.conf.canonical_url
    return (url.host, url.port) == (own.host, own.port)


@functools.cache
def served_by() -> str:
    return str(app.conf.canonical_url)


def wants_database(request: aioweb.Request) -> bool:
    return bool(request.query_string) and request.query.get("nocache") in ("1", "true")


async def ask_owner(owner: URL, request: aioweb.Request) -> Optional[aioweb.Response]:
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
    try:
        async with app.http_client.get(target, headers=headers, timeout=FORWARD_TIMEOUT
                                       ) as reply:
            body = await reply.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        logger.warning("Lookup forward to %s failed, reading PostgreSQL: %r", owner, exc)
        return None
    if reply.status == 401:
        logger.warning("Lookup forward to %s refused the token this worker accepted (do the "
                       "workers' API_TOKENS differ?), reading PostgreSQL", owner)
        return None
    if reply.status >= 500:
        return None
    headers = {name: reply.headers[name] for name in PASSED_HEADERS if name in reply.headers}
    return aioweb.Response(body=body, status=reply.status,
                           content_type="application/json", headers=headers)


async def get_order(request: aioweb.Request) -> aioweb.Response:
    """Return one order, from the cache when it has it, else from PostgreSQL."""
    started = time.perf_counter()
    order_uid = request.match_info["order_uid"]

    def answer(body: bytes, status: int, source: Optional[str] = None) -> aioweb.Response:
        elapsed = time.perf_counter() - started
        metrics.observe_request(ORDER_ROUTE, source, status, elapsed)
        headers = {"X-Duration-ms": f"{elapsed * 1000:.3f}", "X-Served-By": served_by()}
        if source:
            headers["X-Source"] = source
        return aioweb.Response(body=body, status=status, content_type="application/json",
                               headers=headers)

    if api_tokens.enabled and not api_tokens.allows(request.headers.get(AUTHORIZATION)):
        metrics.observe_request(ORDER_ROUTE, None, 401, time.perf_counter() - started)
        return auth.unauthorized(request.headers.get(AUTHORIZATION))
    if not is_valid_order_uid(order_uid):
        return answer(error_body(
            f"invalid order_uid: use 1 to {ORDER_UID_MAX_LENGTH} letters, digits, '-' or '_'",
            order_uid=order_uid[:100]), 400)
    if recent_orders.enabled and not wants_database(request):
        key = order_uid.encode()
        partition = partition_of(key)
        owner = owners.other_than_self(partition)
        if owner is not None and FORWARDED_HEADER not in request.headers:
            routed = await ask_owner(owner, request)
            if routed is not None:
                metrics.observe_request(ORDER_ROUTE, routed.headers.get("X-Source"),
                                        routed.status, time.perf_counter() - started)
                return routed
        else:
            body = recent_orders.lookup(partition, key)
            if body is not None:
                metrics.cache_hits.inc()
                return answer(body, 200, "cache")
            metrics.cache_misses.inc()
    try:
        body = await app.repo.get_body(order_uid)
    except DatabaseUnavailable as exc:
        # The reason names hosts and ports: for the operator's log, not for the client.
        db_outage.failed(order_uid, exc)
        return answer(error_body("database unavailable"), 503, "db")
    db_outage.answered()
    if body is None:
        return answer(error_body("order not found", order_uid=order_uid), 404, "db")
    return answer(body, 200, "db")


class LookupOutage:
    """Logs lookups failing on PostgreSQL once as that starts (with the reason) and once as it
    ends, not once per lookup."""

    def __init__(self) -> None:
        self.down = False

    def failed(self, order_uid: str, exc: DatabaseUnavailable) -> None:
        if not self.down:
            self.down = True
            logger.warning("Lookups answer 503: PostgreSQL unavailable (order_uid %s): %s",
                           order_uid, exc)

    def answered(self) -> None:
        if self.down:
            self.down = False
            logger.info("Lookups read PostgreSQL again")


db_outage = LookupOutage()


# Faust types a page's result as its Response; aiohttp's FileResponse streams a file instead.
@app.page("/")
async def index(web: View, request: Request) -> Response:
    """The order lookup page."""
    return cast(Response, aioweb.FileResponse(settings.web_dir / "index.html"))


@app.page("/openapi.yaml")
async def openapi_spec(web: View, request: Request) -> Response:
    """The OpenAPI description of this HTTP API."""
    return cast(Response, aioweb.FileResponse(settings.openapi_file,
                                              headers={"Content-Type": "application/yaml"}))


@app.page("/metrics")
async def prometheus_metrics(web: View, request: Request) -> Response:
    """Prometheus metrics: ours and Faust's sensor, in the text format."""
    if metrics_tokens.enabled and not metrics_tokens.allows(request.headers.get(AUTHORIZATION)):
        return cast(Response, auth.unauthorized(request.headers.get(AUTHORIZATION)))
    return web.bytes(generate_latest(metrics.registry),
                     headers={"Content-Type": metrics.CONTENT_TYPE})


async def order_uid_missing(request: aioweb.Request) -> aioweb.Response:
    """GET /order/ without an id: a JSON 400, like every other bad lookup."""
    if api_tokens.enabled and not api_tokens.allows(request.headers.get(AUTHORIZATION)):
        return auth.unauthorized(request.headers.get(AUTHORIZATION))
    return aioweb.Response(
        body=error_body("order_uid is required: GET /order/{order_uid}"), status=400,
        content_type="application/json")


async def not_found(request: aioweb.Request) -> aioweb.Response:
    """Any path no route serves: a JSON 404 (a 405 for a write to a static asset's path)."""
    if request.path.startswith("/static/") and request.method not in ("GET", "HEAD"):
        return error_response(405, "method not allowed", {"Allow": "GET,HEAD"})
    return error_response(404, "not found")


async def method_not_allowed(request: aioweb.Request) -> aioweb.Response:
    """A method the path's other routes do not take: a JSON 405 that lists those it does."""
    resource = request.match_info.route.resource
    allowed = sorted({route.method for route in resource or () if route.method != "*"})
    return error_response(405, "method not allowed", {"Allow": ",".join(allowed)})


def error_response(status: int, message: str,
                   headers: Optional[Mapping[str, str]] = None) -> aioweb.Response:
    return aioweb.Response(body=error_body(message), status=status,
                           content_type="application/json", headers=headers)


def asset_route(path: Path) -> Callable[[aioweb.Request], Awaitable[aioweb.StreamResponse]]:
    async def asset(request: aioweb.Request) -> aioweb.StreamResponse:
        return aioweb.FileResponse(path)
    return asset


def finish_routes(router: aioweb.UrlDispatcher) -> None:
    """Routes added when the server starts, after Faust's own (its blueprints come last).

    Errors are routes rather than a middleware, which would cost every lookup a call: each
    path answers the methods it lacks with a JSON 405, and a last catch-all route answers
    every other path with a JSON 404. The files of WEB_DIR at start are served under
    /static/, one route each, so no request path ever reaches the file system (no traversal,
    no "File name too long").
    """
    auth.warn_if_unprotected(*settings.http_addr, api_tokens)
    for asset in sorted(settings.web_dir.iterdir()):
        if asset.is_file() and not asset.name.startswith("."):
            router.add_get(f"/static/{asset.name}", asset_route(asset))
    for resource in list(router.resources()):
        if isinstance(resource, (PlainResource, DynamicResource)):
            resource.add_route("*", method_not_allowed)
    router.add_route("*", r"/{path:[\s\S]*}", not_found)  # any character, newlines too


# Routes in one table. The hot route is a plain aiohttp handler on Faust's web server: Faust's
# View layer (dispatch, sensors, response wrapping) cost ~8% of a cache hit and gives it nothing.
_driver = cast(AiohttpWeb, app.web)
_router = _driver.web_app.router
_router.add_get(ORDER_ROUTE, get_order)
_router.add_get("/order/", order_uid_missing)
_router.add_get("/order", order_uid_missing)
webserver.install(_driver, settings, before_start=finish_routes)
