"""HTTP handlers on Faust's web server: order lookup, the page and its assets, JSON errors.

Every route is in the one table of register(). With API_TOKENS set, the order lookup answers
only requests with one of the tokens (auth.py); /metrics likewise with METRICS_TOKEN. The page,
its assets, /health, /ready and /openapi.yaml stay open: they reveal no order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, cast

import orjson
from aiohttp import web as aioweb
from aiohttp.web_urldispatcher import DynamicResource, PlainResource
from faust.web import Request, Response, View
from faust.web.drivers.aiohttp import Web as AiohttpWeb
from prometheus_client import generate_latest
from yarl import URL

from . import auth, dead_letter_api, health, metrics, pipeline, tracing, webserver
from .cache.entry import entry_body
from .cache.routing import AUTHORIZATION, FORWARDED_HEADER, Owners, ask_owner
from .cache.standby import StandbyReads
from .lookup_answers import LookupAnswers
from .lookup_reads import BatchedReads, readers_for
from .order import ORDER_UID_MAX_LENGTH, is_valid_order_uid
from .repo import DatabaseUnavailable

if TYPE_CHECKING:
    from .app import OrderApp

logger = logging.getLogger(__name__)

ORDER_ROUTE = "/order/{order_uid}"
# X-Source of a 404 answered from the negative cache (a recent miss, cache/negative.py).
NEGATIVE_SOURCE = "negative-cache"


def error_body(message: str, **details: str) -> bytes:
    return orjson.dumps({"error": message, **details})


def wants_database(request: aioweb.Request) -> bool:
    return bool(request.query_string) and request.query.get("nocache") in ("1", "true")


class OrderLookups:
    """GET /order/{order_uid}: from the cache when this worker owns the order's partition and
    has it; when another worker does, from this worker's standby copy if it is fresh enough
    (cache/standby.py), else from the owner; else from PostgreSQL."""

    def __init__(self, app: OrderApp) -> None:
        self.app = app
        self.cache = app.recent_orders
        self.owners = Owners(app, app.recent_orders.table)
        self.standbys = StandbyReads(
            app, app.recent_orders.table, app.settings.standby_read_max_lag
        )
        self.api_tokens = auth.BearerTokens(app.settings.api_tokens)
        self.db_outage = LookupOutage()
        self.unknown_orders = app.unknown_orders
        self.reads = BatchedReads(
            app.repo,
            readers=readers_for(app.settings.pg_pool_size, app.settings.pg_write_connections),
        )
        self._answers: LookupAnswers | None = None

    def answers(self) -> LookupAnswers:
        if self._answers is None:  # the canonical URL is known once Faust configured the server
            self._answers = LookupAnswers(ORDER_ROUTE, str(self.app.conf.canonical_url))
        return self._answers

    async def get_order(self, request: aioweb.Request) -> aioweb.Response:
        """Return one order, from the cache when it has it, else from PostgreSQL (always
        during a rebalance)."""
        started = time.perf_counter()
        answer = (self._answers or self.answers()).answer
        order_uid = request.match_info["order_uid"]
        if self.api_tokens.enabled and not self.api_tokens.allows(
            request.headers.get(AUTHORIZATION)
        ):
            metrics.observe_request(ORDER_ROUTE, None, 401, time.perf_counter() - started)
            return auth.unauthorized(request.headers.get(AUTHORIZATION))
        if not is_valid_order_uid(order_uid):
            return answer(
                error_body(
                    f"invalid order_uid: use 1 to {ORDER_UID_MAX_LENGTH} letters, digits, "
                    "'-' or '_'",
                    order_uid=order_uid[:100],
                ),
                400,
                None,
                started,
            )
        unknown, ticket = self.unknown_orders, None
        if not wants_database(request):
            cache = self.cache
            key = order_uid.encode()
            partition = cache.partition_for(key)
            # While a rebalance lasts (until this worker's cache partitions are recovered),
            # a local store may be behind its changelog and the owner map out of date: a
            # worker taking a partition back would answer from what it held before. Then
            # PostgreSQL answers.
            if cache.enabled and not self.app.rebalancing:
                owner = self.owners.other_than_self(partition)
                if owner is None or FORWARDED_HEADER in request.headers:
                    body = cache.lookup(partition, key)
                    if body is not None:
                        metrics.cache_hits.inc()
                        return answer(body, 200, "cache", started)
                    metrics.cache_misses.inc()
                else:
                    found = await self.from_other_worker(request, owner, partition, key, started)
                    if found is not None:
                        return found
            if unknown.enabled:
                if unknown.knows_missing(partition, order_uid):  # cache/negative.py: its rule
                    metrics.negative_cache_hits.inc()
                    return answer(
                        error_body("order not found", order_uid=order_uid),
                        404,
                        NEGATIVE_SOURCE,
                        started,
                    )
                ticket = unknown.reading(partition, order_uid)
        missing = False  # true only once PostgreSQL has answered that it has no such order
        try:
            body = await self.reads.get_body(order_uid)  # lookup_reads.py: batched
            missing = body is None
        except DatabaseUnavailable as exc:
            # The reason names hosts and ports: for the operator's log, not for the client.
            self.db_outage.failed(order_uid, exc)
            return answer(error_body("database unavailable"), 503, "db", started)
        finally:
            if ticket is not None:
                unknown.read(ticket, missing=missing)
        self.db_outage.answered()
        if body is None:
            return answer(error_body("order not found", order_uid=order_uid), 404, "db", started)
        return answer(body, 200, "db", started)

    async def from_other_worker(
        self, request: aioweb.Request, owner: URL, partition: int, key: bytes, started: float
    ) -> aioweb.Response | None:
        """The answer of a standby copy here or of the owner; None: read PostgreSQL."""
        standby = await self.standbys.read(partition, key)
        if standby is None:  # no standby copy here, or not fresh enough: ask the owner
            routed = await ask_owner(self.app, owner, request)
            if routed is not None:
                metrics.observe_request(
                    ORDER_ROUTE,
                    routed.headers.get("X-Source"),
                    routed.status,
                    time.perf_counter() - started,
                )
            return routed  # None: the owner did not answer, PostgreSQL does
        if standby.value is not None:
            metrics.cache_hits.inc()
            return self.answers().answer(entry_body(standby.value), 200, "cache-standby", started)
        metrics.cache_misses.inc()  # the owner's cache lacks it too (as the bound allows)
        return None

    async def order_uid_missing(self, request: aioweb.Request) -> aioweb.Response:
        """GET /order/ without an id: a JSON 400, like every other bad lookup."""
        if self.api_tokens.enabled and not self.api_tokens.allows(
            request.headers.get(AUTHORIZATION)
        ):
            return auth.unauthorized(request.headers.get(AUTHORIZATION))
        return aioweb.Response(
            body=error_body("order_uid is required: GET /order/{order_uid}"),
            status=400,
            content_type="application/json",
        )


class LookupOutage:
    """Logs lookups failing on PostgreSQL once as that starts (with the reason) and once as it
    ends, not once per lookup."""

    def __init__(self) -> None:
        self.down = False

    def failed(self, order_uid: str, exc: DatabaseUnavailable) -> None:
        if not self.down:
            self.down = True
            logger.warning(
                "Lookups answer 503: PostgreSQL unavailable (order_uid %s): %s", order_uid, exc
            )

    def answered(self) -> None:
        if self.down:
            self.down = False
            logger.info("Lookups read PostgreSQL again")


FaustPage = Callable[[View, Request], Awaitable[Response]]


def faust_pages(app: OrderApp) -> dict[str, FaustPage]:
    """The pages served by Faust's View layer, by path."""
    settings = app.settings
    metrics_tokens = auth.BearerTokens((settings.metrics_token,))

    # Faust types a page's result as its Response; aiohttp's FileResponse streams a file.
    async def index(web: View, request: Request) -> Response:
        """The order lookup page."""
        return cast(Response, aioweb.FileResponse(settings.web_dir / "index.html"))

    async def api_reference(web: View, request: Request) -> Response:
        """The API reference: swagger-ui (vendored in WEB_DIR) rendering /openapi.yaml."""
        return cast(Response, aioweb.FileResponse(settings.web_dir / "docs.html"))

    async def openapi_spec(web: View, request: Request) -> Response:
        """The OpenAPI description of this HTTP API."""
        return cast(
            Response,
            aioweb.FileResponse(
                settings.openapi_file, headers={"Content-Type": "application/yaml"}
            ),
        )

    async def prometheus_metrics(web: View, request: Request) -> Response:
        """Prometheus metrics: ours and Faust's sensor, in the text format."""
        authorization = request.headers.get(AUTHORIZATION)
        if metrics_tokens.enabled and not metrics_tokens.allows(authorization):
            return cast(Response, auth.unauthorized(authorization))
        return web.bytes(
            generate_latest(metrics.registry), headers={"Content-Type": metrics.CONTENT_TYPE}
        )

    async def alive(web: View, request: Request) -> Response:
        """The process is alive and serving HTTP."""
        return web.bytes(health.HEALTHY, content_type="application/json")

    async def ready(web: View, request: Request) -> Response:
        """200 when the worker can do its job (health.readiness), else 503 with the checks."""
        is_ready, body = await health.readiness(app)
        return web.bytes(
            orjson.dumps(body), content_type="application/json", status=200 if is_ready else 503
        )

    return {
        "/health": alive,
        "/ready": ready,
        "/": index,
        "/openapi.yaml": openapi_spec,
        "/metrics": prometheus_metrics,
        "/docs": api_reference,
    }


def register(app: OrderApp) -> None:
    """Every route of the service, in one table.

    The hot route (the order lookup) is a plain aiohttp handler on Faust's web server:
    Faust's View layer (dispatch, sensors, response wrapping) gives it nothing and costs
    every lookup time. Errors are routes added when the server starts (finish_routes).
    """
    lookups = OrderLookups(app)
    for path, page in faust_pages(app).items():
        app.page(path)(page)
    driver = cast(AiohttpWeb, app.web)
    router = driver.web_app.router
    router.add_get(ORDER_ROUTE, tracing.traced_lookup(lookups.get_order))  # itself when off
    router.add_get("/order/", lookups.order_uid_missing)
    router.add_get("/order", lookups.order_uid_missing)
    pipeline.register(app, router)  # /api/pipeline, /api/orders/recent
    dead_letter_api.register(app, router)  # /api/dead-letters, /api/dead-letters/replay
    tracing.instrument_web(driver.web_app)  # with tracing on, a span per request
    webserver.install(
        driver,
        app.settings,
        before_start=lambda router: finish_routes(app, router, lookups.api_tokens),
    )


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


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> aioweb.Response:
    return aioweb.Response(
        body=error_body(message), status=status, content_type="application/json", headers=headers
    )


def asset_route(path: Path) -> Callable[[aioweb.Request], Awaitable[aioweb.StreamResponse]]:
    async def asset(request: aioweb.Request) -> aioweb.StreamResponse:
        return aioweb.FileResponse(path)

    return asset


def finish_routes(
    app: OrderApp, router: aioweb.UrlDispatcher, api_tokens: auth.BearerTokens
) -> None:
    """Routes added when the server starts, after Faust's own (its blueprints come last).

    Errors are routes rather than a middleware, which would cost every lookup a call: each
    path answers the methods it lacks with a JSON 405, and a last catch-all route answers
    every other path with a JSON 404. The files of WEB_DIR at start are served under
    /static/, one route each, so no request path ever reaches the file system (no traversal,
    no "File name too long").
    """
    settings = app.settings
    auth.warn_if_unprotected(*settings.http_addr, api_tokens)
    for asset in sorted(settings.web_dir.iterdir()):
        if asset.is_file() and not asset.name.startswith("."):
            router.add_get(f"/static/{asset.name}", asset_route(asset))
    for resource in list(router.resources()):
        if isinstance(resource, (PlainResource, DynamicResource)):
            resource.add_route("*", method_not_allowed)
    router.add_route("*", r"/{path:[\s\S]*}", not_found)  # any character, newlines too
