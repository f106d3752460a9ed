"""The lookup's metrics without locks (metrics.RequestSeconds, metrics.LoopCounter): what
prometheus_client's Histogram and Counter would export for the same requests, line for line."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from orderstream.metrics import REQUEST_BUCKETS, REQUEST_SECONDS, LoopCounter, RequestSeconds

OBSERVED = [
    ("/order/{order_uid}", "cache", 200, 0.0004),
    ("/order/{order_uid}", "cache", 200, 0.0005),  # on a bucket's bound: counted in it
    ("/order/{order_uid}", "cache", 200, 0.003),
    ("/order/{order_uid}", "db", 404, 0.02),
    ("/order/{order_uid}", "db", 503, 7.5),  # above every bound: +Inf only
    ("/order/{order_uid}", None, 401, 0.00001),
    ("/order/{order_uid}", None, 400, 0.0),
]


def exposition(collector: object) -> list[str]:
    registry = CollectorRegistry()
    registry.register(collector)  # type: ignore[arg-type]
    return sorted(generate_latest(registry).decode().splitlines())


def test_the_same_exposition_as_prometheus_clients_histogram() -> None:
    ours = RequestSeconds()
    reference_registry = CollectorRegistry()
    reference = Histogram(
        REQUEST_SECONDS,
        "Time to answer HTTP requests, by route pattern, X-Source (cache, db, none) and status.",
        ["route", "source", "status"],
        buckets=REQUEST_BUCKETS,
        registry=reference_registry,
    )
    for route, source, status, seconds in OBSERVED:
        ours.series(route, source, status).observe(seconds)
        reference.labels(route, source or "none", str(status)).observe(seconds)

    expected = sorted(
        line
        for line in generate_latest(reference_registry).decode().splitlines()
        if "_created" not in line  # metrics.py disables them
    )
    assert exposition(ours) == expected


def test_one_series_per_labels() -> None:
    ours = RequestSeconds()
    assert ours.series("/r", "cache", 200) is ours.series("/r", "cache", 200)
    assert ours.series("/r", "cache", 200) is not ours.series("/r", "cache", 404)


def test_a_loop_counter_exports_what_a_counter_does() -> None:
    ours_registry, reference_registry = CollectorRegistry(), CollectorRegistry()
    ours = LoopCounter("orderstream_cache_hits", "Lookups answered.", registry=ours_registry)
    reference = Counter("orderstream_cache_hits", "Lookups answered.", registry=reference_registry)
    assert generate_latest(ours_registry) == generate_latest(reference_registry)  # 0 at first
    for _ in range(3):
        ours.inc()
        reference.inc()

    assert generate_latest(ours_registry) == generate_latest(reference_registry)
    assert b"orderstream_cache_hits_total 3.0" in generate_latest(ours_registry)
