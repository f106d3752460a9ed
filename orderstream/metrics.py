"""What the worker measures: Prometheus metrics in a registry of its own, served at /metrics.

Counters and histograms are updated where things happen (agents, views); the cache size and
the consumer lag are read from the worker's state when Prometheus scrapes, so no background
task keeps them. Faust's own sensor (sends, commits, offsets, rebalances) records into the same
registry under ``orderstream_faust_``.
"""

from __future__ import annotations

import functools
import itertools
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import prometheus_client
from faust import web
from faust.exceptions import ConsumerNotStarted
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP, AppT, CollectionT, EventT, Message, StreamT
from faust.types.transports import ConsumerT
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .order.validation import INVALID, NOT_AN_ORDER, NOT_JSON

if TYPE_CHECKING:
    from .app import OrderApp

# What generate_latest writes. (prometheus_client's CONTENT_TYPE_LATEST names the 1.0.0 text
# format since 0.22, for output generated with other escaping options.)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEAD_LETTER_REASONS = (NOT_JSON, NOT_AN_ORDER, INVALID, "db_rejected")

# Counters and histograms only: a `_created` series beside each would double their number.
prometheus_client.disable_created_metrics()
registry = CollectorRegistry()
ProcessCollector(registry=registry)
PlatformCollector(registry=registry)
GCCollector(registry=registry)

orders_consumed = Counter(
    "orderstream_orders_consumed",
    "Messages taken from the orders topic, forwarded ones included "
    "(= stored + dead-lettered + forwarded).",
    registry=registry,
)
orders_stored = Counter(
    "orderstream_orders_stored", "Orders written to PostgreSQL.", registry=registry
)
orders_dead_lettered = Counter(
    "orderstream_orders_dead_lettered",
    "Messages published to the dead-letter topic, by reason.",
    ["reason"],
    registry=registry,
)
for _reason in DEAD_LETTER_REASONS:
    orders_dead_lettered.labels(_reason)  # every reason is exported, at 0 until it happens
orders_superseded = Counter(
    "orderstream_orders_superseded",
    "Orders not stored because a later version is stored already.",
    registry=registry,
)
orders_forwarded = Counter(
    "orderstream_orders_forwarded",
    "Orders re-published to the partition of their order_uid.",
    registry=registry,
)

db_batch_seconds = Histogram(
    "orderstream_db_batch_seconds",
    "Duration of successful batch upserts to PostgreSQL.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=registry,
)
db_batch_size = Histogram(
    "orderstream_db_batch_size",
    "Orders in each successful batch upsert.",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
    registry=registry,
)
db_unavailable = Counter(
    "orderstream_db_unavailable",
    "Batch upserts retried because PostgreSQL was unavailable.",
    registry=registry,
)


class LoopCounter(Collector):
    """A counter without labels, counted on the event loop's thread only, so without a lock.

    Exported as prometheus_client's Counter is (``<name>_total``); its ``inc`` takes a lock and
    checks the metric's state on every call, for every lookup.
    """

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.value = 0
        registry.register(self)

    def inc(self) -> None:
        self.value += 1

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.value)


cache_hits = LoopCounter(
    "orderstream_cache_hits", "Order lookups answered from the cache.", registry=registry
)
cache_misses = LoopCounter(
    "orderstream_cache_misses",
    "Order lookups that tried the cache and did not find the order.",
    registry=registry,
)

negative_cache_hits = LoopCounter(
    "orderstream_negative_cache_hits",
    "Order lookups answered 404 from the negative cache (a recent miss), without PostgreSQL.",
    registry=registry,
)

REQUEST_SECONDS = "orderstream_http_request_seconds"
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BUCKET_LABELS = (*(floatToGoString(bound) for bound in REQUEST_BUCKETS), "+Inf")


class RequestSeries:
    """One series of orderstream_http_request_seconds: plain counts per bucket and a sum.

    Recorded and scraped on the event loop's thread only, so no lock: a prometheus_client
    Histogram takes one per bucket and one for the sum on every observation, and validates its
    labels on every labels() call, a visible share of a cache hit.
    """

    __slots__ = ("counts", "labels", "total")

    def __init__(self, route: str, source: str | None, status: int) -> None:
        self.labels = (route, source or "none", str(status))
        self.counts = [0] * (len(REQUEST_BUCKETS) + 1)  # the last one: above every bucket
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(REQUEST_BUCKETS, seconds)] += 1
        self.total += seconds


class RequestSeconds(Collector):
    """Time to answer HTTP requests, a histogram by route pattern, X-Source and status."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, str | None, int], RequestSeries] = {}

    def series(self, route: str, source: str | None, status: int) -> RequestSeries:
        found = self._series.get((route, source, status))
        if found is None:
            found = self._series[route, source, status] = RequestSeries(route, source, status)
        return found

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            REQUEST_SECONDS,
            "Time to answer HTTP requests, by route pattern, X-Source (cache, db, none) and "
            "status.",
            labels=["route", "source", "status"],
        )
        for series in list(self._series.values()):
            cumulative = list(itertools.accumulate(series.counts))
            family.add_metric(
                series.labels, list(zip(BUCKET_LABELS, cumulative, strict=True)), series.total
            )
        yield family


request_seconds = RequestSeconds()
registry.register(request_seconds)


def observe_request(route: str, source: str | None, status: int, seconds: float) -> None:
    """Record one answered request; ``source`` is its X-Source header, if any."""
    request_seconds.series(route, source, status).observe(seconds)


class WorkerState(Collector):
    """Gauges read from the worker at scrape time: the cache size and the orders consumer lag."""

    def __init__(self) -> None:
        self.app: OrderApp | None = None  # the app install() was called with

    def collect(self) -> Iterator[Metric]:
        app = self.app
        if app is None:
            return
        cache_size = GaugeMetricFamily(
            "orderstream_cache_size",
            "Orders cached in this worker's active partitions (absent after a rebalance "
            "until the next cache write).",
        )
        size = app.recent_orders.size()
        if size is not None:
            cache_size.add_metric([], size)
        yield cache_size

        lag = GaugeMetricFamily(
            "orderstream_consumer_lag",
            "Messages of the orders topic not yet processed and committed, by assigned partition "
            "(high watermark - committed offset).",
            labels=["topic", "partition"],
        )
        for tp, behind in consumer_lag(app.consumer, app.orders_topic.get_topic_name()):
            lag.add_metric([tp.topic, str(tp.partition)], behind)
        yield lag


def consumer_lag(consumer: ConsumerT, topic: str) -> Iterator[tuple[TP, int]]:
    """High watermark minus committed offset for each assigned partition of ``topic``."""
    for tp, end, committed in consumer_offsets(consumer, topic):
        yield tp, max(end - committed, 0)


def consumer_offsets(consumer: ConsumerT, topic: str) -> Iterator[tuple[TP, int, int]]:
    """(partition, high watermark, committed offset) for each assigned partition of ``topic``.

    Both are the *next* offset. The high watermark is the one of the last fetch (partitions
    not fetched yet are skipped). The committed offsets are Faust's own record of them,
    seeded from Kafka after each rebalance and updated on each commit; Faust has no public
    accessor for them (its Monitor's copy is cleared on rebalance and refilled only by new
    commits, which an idle partition never makes).
    """
    try:
        assigned = consumer.assignment()
    except ConsumerNotStarted:
        return
    committed = consumer._committed_offset  # type: ignore[attr-defined]
    for tp in sorted(tp for tp in assigned if tp.topic == topic):
        try:
            end = consumer.highwater(tp)
        except AssertionError:  # aiokafka asserts the partition is assigned: revoked meanwhile
            continue
        if end is not None:
            # Faust stores a committed offset of 0 as None.
            yield tp, end, committed.get(tp) or 0


class LeanPrometheusMonitor(PrometheusMonitor):
    """Faust's Prometheus sensor without its per-message, per-event and per-request hooks.

    Each looks up a labelled series for every message, event and lookup, a visible share
    of the worker's CPU while ingesting and more on cache hits (README "Performance"). The
    counters above measure the same flow once per batch. Kept: commits, committed and end
    offsets, rebalances, assignments, sends.
    """

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        pass

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        pass

    def on_stream_event_in(
        self, tp: TP, offset: int, stream: StreamT, event: EventT
    ) -> dict | None:
        return None

    def on_stream_event_out(
        self, tp: TP, offset: int, stream: StreamT, event: EventT, state: dict | None = None
    ) -> None:
        pass

    def on_table_get(self, table: CollectionT, key: Any) -> None:
        pass

    def on_table_set(self, table: CollectionT, key: Any, value: Any) -> None:
        pass

    def on_table_del(self, table: CollectionT, key: Any) -> None:
        pass

    def on_web_request_start(
        self, app: AppT, request: web.Request, *, view: web.View | None = None
    ) -> dict:
        return {}

    def on_web_request_end(
        self,
        app: AppT,
        request: web.Request,
        response: web.Response | None,
        state: dict,
        *,
        view: web.View | None = None,
    ) -> None:
        pass


worker_state = WorkerState()
registry.register(worker_state)


@functools.cache
def faust_metrics() -> FaustMetrics:
    """The series of Faust's sensor, in our registry (once per process, like the registry)."""
    return FaustMetrics.create(registry, "orderstream_faust")


def install(app: OrderApp) -> None:
    """Export ``app``'s cache size and lag, and Faust's sensor without its own /metrics page
    (setup_prometheus_sensors would add one)."""
    worker_state.app = app
    app.monitor = LeanPrometheusMonitor(metrics=faust_metrics())
