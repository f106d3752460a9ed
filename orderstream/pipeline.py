"""The live pipeline panel's data: GET /api/pipeline (the whole group) and /api/orders/recent.

Each worker samples its own counters (metrics.py) once a second into a short window, so a
status answer reads rates without any work per message. Any worker answers for the group: it
asks every other worker of the assignment for its own block (``?scope=worker``, the caller's
Authorization header forwarded, like a routed lookup) and adds its own; a worker that does not
answer within PEER_TIMEOUT is listed as unreachable, and the answer does not wait for it longer.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web as aioweb
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from faust.types import TP
from prometheus_client.registry import Collector
from yarl import URL

from . import auth, health, metrics
from .cache.routing import AUTHORIZATION, is_same_worker
from .cache.store import EARLIEST_OFFSET, end_offsets
from .order import format_timestamp
from .repo import DatabaseUnavailable

if TYPE_CHECKING:
    from .app import OrderApp

logger = logging.getLogger(__name__)

PIPELINE_ROUTE = "/api/pipeline"
RECENT_ROUTE = "/api/orders/recent"
SAMPLE_INTERVAL = 1.0
# Samples kept: the rates span the last five seconds.
WINDOW = 6
PEER_TIMEOUT = aiohttp.ClientTimeout(total=1.0)
# A worker's own PostgreSQL check waits this long, so a database outage leaves it well within
# the PEER_TIMEOUT of a worker asking (it says PostgreSQL does not answer, not that it is lost).
PING_TIMEOUT = 0.5
OFFSETS_TIMEOUT = 1.0
RECENT_DEFAULT, RECENT_MAX = 20, 100
_LIMIT = re.compile(r"[0-9]{1,3}")
FLOWS = {
    "consumed": metrics.orders_consumed,
    "stored": metrics.orders_stored,
    "dead_lettered": metrics.orders_dead_lettered,
}


def counter_total(counter: Collector) -> float:
    """A counter's value, summed over its labels (the dead-letter reasons)."""
    return sum(
        sample.value
        for family in counter.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    )


def utc_text(moment: datetime) -> str:
    """``2026-12-02T03:30:00.123Z``: UTC, milliseconds."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class FlowSampler:
    """The worker's consumed/stored/dead-lettered counters, sampled once a second."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, dict[str, float]]] = deque(maxlen=WINDOW)

    def sample(self) -> None:
        self.samples.append((time.monotonic(), self.totals()))

    @staticmethod
    def totals() -> dict[str, float]:
        return {name: counter_total(counter) for name, counter in FLOWS.items()}

    def rates(self) -> dict[str, float]:
        """Per second between the oldest and newest sample; 0 until two samples exist."""
        if len(self.samples) < 2:
            return dict.fromkeys(FLOWS, 0.0)
        (start, first), (end, last) = self.samples[0], self.samples[-1]
        return {name: round((last[name] - first[name]) / (end - start), 2) for name in FLOWS}

    async def run(self) -> None:
        """Sample until the worker stops (an app task)."""
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_INTERVAL)


async def message_count(client: AIOKafkaClient, topic: str) -> int:
    """Messages in ``topic`` now: the sum of its partitions' end - start offsets.

    Asked of each partition's leader with ListOffsets requests on the app's own client (the
    batch producer's): no consumer, no group membership, partitions assigned to nobody too.
    """
    await client.add_topic(topic)  # resolves once the metadata knows the topic
    tps = [TP(topic, partition) for partition in client.cluster.partitions_for_topic(topic) or ()]
    ends = await end_offsets(client, tps)
    starts = await end_offsets(client, tps, at=EARLIEST_OFFSET)
    if len(ends) < len(tps) or len(starts) < len(tps):
        raise KafkaError(f"no offsets for every partition of {topic} (leaders moving?)")
    return sum(ends.values()) - sum(starts.values())


def cache_block(hits: float, misses: float, size: int | None, enabled: bool) -> dict[str, Any]:
    lookups = hits + misses
    return {
        "enabled": enabled,
        "size": size,
        "hits": int(hits),
        "misses": int(misses),
        "hit_ratio": round(hits / lookups, 3) if lookups else None,
    }


class PipelineStatus:
    """The handlers of /api/pipeline and /api/orders/recent, and the sampler behind them."""

    def __init__(self, app: OrderApp) -> None:
        self.app = app
        self.sampler = FlowSampler()
        self.api_tokens = auth.BearerTokens(app.settings.api_tokens)
        self.db_down = False

    @property
    def own_url(self) -> URL:
        return URL(str(self.app.conf.canonical_url))

    def refused(self, request: aioweb.Request) -> aioweb.Response | None:
        """A 401 when API_TOKENS is set and the request lacks one of them."""
        authorization = request.headers.get(AUTHORIZATION)
        if self.api_tokens.allows(authorization):
            return None
        return auth.unauthorized(authorization)

    async def get_pipeline(self, request: aioweb.Request) -> aioweb.Response:
        """The group's pipeline status; ``?scope=worker``: this worker's block only."""
        if (refusal := self.refused(request)) is not None:
            return refusal
        scope = request.query.get("scope", "group")
        if scope == "worker":
            return json_response(await self.worker_block())
        if scope != "group":
            return json_response(
                {"error": "scope must be group or worker", "scope": scope[:100]}, 400
            )
        return json_response(await self.group_status(request.headers.get(AUTHORIZATION)))

    async def worker_block(self) -> dict[str, Any]:
        """This worker: readiness, partitions with their lag, rates, totals, cache."""
        app = self.app
        is_ready, readiness = await health.readiness(app, PING_TIMEOUT)
        topic = app.orders_topic.get_topic_name()
        offsets = [
            {
                "partition": tp.partition,
                "end_offset": end,
                "committed": committed,
                "lag": max(end - committed, 0),
            }
            for tp, end, committed in metrics.consumer_offsets(app.consumer, topic)
        ]
        partitions = sorted(
            tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic
        )
        totals = self.sampler.totals()
        return {
            "url": str(self.own_url),
            "self": True,
            "reachable": True,
            "ready": is_ready,
            "checks": readiness["checks"],
            "partitions": partitions,
            "offsets": offsets,
            "rates": self.sampler.rates(),
            "totals": {name: int(value) for name, value in totals.items()},
            "cache": cache_block(
                counter_total(metrics.cache_hits),
                counter_total(metrics.cache_misses),
                app.recent_orders.size(),
                app.recent_orders.enabled,
            ),
        }

    def peers(self) -> dict[URL, list[int]]:
        """The other workers of the assignment, each with its partitions of the orders topic."""
        router = self.app.router
        topic = self.app.orders_topic.get_topic_name()
        owned = {
            URL(url): sorted(topics.get(topic, ()))
            for url, topics in router.external_topics_metadata().items()
        }
        for url in router.tables_metadata():
            owned.setdefault(URL(url), [])
        return {
            url: partitions
            for url, partitions in owned.items()
            if not is_same_worker(url, self.own_url)
        }

    async def ask_peer(
        self, url: URL, partitions: list[int], authorization: str | None
    ) -> dict[str, Any]:
        """The peer's own block, or an unreachable entry naming why (never waits past 1 s)."""
        headers = {} if authorization is None else {AUTHORIZATION: authorization}
        unreachable = {
            "url": str(url),
            "self": False,
            "reachable": False,
            "ready": False,
            "partitions": partitions,
        }
        try:
            async with self.app.http_client.get(
                url.with_path(PIPELINE_ROUTE).with_query(scope="worker"),
                headers=headers,
                timeout=PEER_TIMEOUT,
            ) as reply:
                body = await reply.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            return {
                **unreachable,
                "error": "no answer within 1 s"
                if isinstance(exc, asyncio.TimeoutError)
                else type(exc).__name__,
            }
        if reply.status != 200:
            return {**unreachable, "error": f"answered HTTP {reply.status}"}
        try:
            block = orjson.loads(body)
        except orjson.JSONDecodeError:
            return {**unreachable, "error": "answered something other than JSON"}
        return {**block, "self": False}

    async def dead_letter_total(self) -> int | None:
        topic = self.app.dead_letter_topic.get_topic_name()
        try:
            return await asyncio.wait_for(
                message_count(self.app.batch_producer.client, topic), OFFSETS_TIMEOUT
            )
        except (TimeoutError, KafkaError, OSError, RuntimeError) as exc:
            logger.info("Dead-letter count of %s unavailable: %r", topic, exc)
            return None

    async def group_status(self, authorization: str | None) -> dict[str, Any]:
        """Every worker's block (this one first), with the group's sums and partition owners."""
        app, settings = self.app, self.app.settings
        peers = self.peers()
        own, dead_letters, *others = await asyncio.gather(
            self.worker_block(),
            self.dead_letter_total(),
            *(
                self.ask_peer(url, partitions, authorization)
                for url, partitions in sorted(peers.items())
            ),
        )
        workers = [own, *others]
        reachable = [worker for worker in workers if worker["reachable"]]
        return {
            "generated_at": utc_text(datetime.now(UTC)),
            "answered_by": own["url"],
            "group": settings.kafka_group_id,
            "topic": app.orders_topic.get_topic_name(),
            "dead_letter_topic": app.dead_letter_topic.get_topic_name(),
            "ready": all(worker["ready"] for worker in workers),
            "rates": {name: round(sum(w["rates"][name] for w in reachable), 2) for name in FLOWS},
            "totals": {name: sum(w["totals"][name] for w in reachable) for name in FLOWS},
            "cache": group_cache(w["cache"] for w in reachable),
            "partitions": partition_owners(workers, settings.kafka_partitions),
            "workers": workers,
            "dead_letters": {"total": dead_letters},
        }

    async def get_recent_orders(self, request: aioweb.Request) -> aioweb.Response:
        """The newest stored orders (by the time they were last written), newest first."""
        if (refusal := self.refused(request)) is not None:
            return refusal
        raw = request.query.get("limit", str(RECENT_DEFAULT))
        if not _LIMIT.fullmatch(raw) or not 1 <= int(raw) <= RECENT_MAX:
            return json_response(
                {"error": f"limit must be an integer from 1 to {RECENT_MAX}", "limit": raw[:100]},
                400,
            )
        try:
            rows = await self.app.repo.recent_stored(int(raw))
        except DatabaseUnavailable as exc:
            if not self.db_down:
                logger.warning("Recent orders answer 503: PostgreSQL unavailable: %s", exc)
            self.db_down = True
            return json_response({"error": "database unavailable"}, 503)
        self.db_down = False
        return json_response(
            {
                "orders": [
                    {
                        "order_uid": uid,
                        "track_number": track,
                        "date_created": format_timestamp(created),
                        "stored_at": utc_text(stored),
                    }
                    for uid, track, created, stored in rows
                ]
            }
        )


def group_cache(blocks: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The reachable workers' caches together: sizes, hits and misses summed."""
    blocks = list(blocks)
    sizes = [block["size"] for block in blocks if block["size"] is not None]
    return cache_block(
        sum(block["hits"] for block in blocks),
        sum(block["misses"] for block in blocks),
        sum(sizes) if sizes else None,
        any(block["enabled"] for block in blocks),
    )


def partition_owners(workers: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """Every partition of the orders topic with its owner (null: none now) and its lag as the
    owner reports it (null when the owner is unreachable or has not fetched it yet)."""
    rows: dict[int, dict[str, Any]] = {
        partition: {
            "partition": partition,
            "owner": None,
            "end_offset": None,
            "committed": None,
            "lag": None,
        }
        for partition in range(count)
    }
    for worker in workers:
        for partition in worker["partitions"]:
            row = rows.setdefault(
                partition,
                {
                    "partition": partition,
                    "owner": None,
                    "end_offset": None,
                    "committed": None,
                    "lag": None,
                },
            )
            if row["owner"] is None:
                row["owner"] = worker["url"]
        for offsets in worker.get("offsets", ()):
            owned = rows.get(offsets["partition"])
            if owned is not None and owned["owner"] == worker["url"]:
                owned.update(offsets)
    return [rows[partition] for partition in sorted(rows)]


def json_response(body: dict[str, Any], status: int = 200) -> aioweb.Response:
    return aioweb.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def register(app: OrderApp, router: aioweb.UrlDispatcher) -> None:
    """The two routes, and the sampler as an app task (it runs while the worker does)."""
    status = PipelineStatus(app)
    router.add_get(PIPELINE_ROUTE, status.get_pipeline)
    router.add_get(RECENT_ROUTE, status.get_recent_orders)

    @app.task
    async def sample_flows() -> None:
        """Sample the worker's counters for the pipeline panel's rates."""
        await status.sampler.run()
