"""Tracing with OpenTelemetry (README "Tracing") on the real Kafka and PostgreSQL.

A worker and `produce` with OTEL_TRACES_EXPORTER=console print their spans (one JSON object a
line, on standard error): the produced messages carry the producer spans' traceparent, the
worker's batch span continues and links them, with validate/store/cache children, asyncpg
spans under store, and a span per lookup with its order_uid and source. Off (the default):
no header, no span. In-process, the SDK's in-memory exporter sees the same helpers' spans.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from harness import REPO_ROOT, OtlpSink, eventually, hermetic, orderstream_command
from orderstream import tracing
from orderstream.order import encode_order, random_orders
from orderstream.repo import OrderRepository

from .test_pipeline import served_from, wait_stored

# version 00, trace id, parent span id, flags (sampled; 03 also says the trace id is random)
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-0[13]$")
CONSOLE = {
    "OTEL_TRACES_EXPORTER": "console",
    "OTEL_SERVICE_NAME": "orderstream-under-test",
    # Export every 100 ms instead of 5 s, so the test need not wait.
    "OTEL_BSP_SCHEDULE_DELAY": "100",
}


def without_otel(env: dict[str, str]) -> dict[str, str]:
    """``env`` with no OTEL_* variable: the default, whatever the developer's shell has."""
    return {name: value for name, value in env.items() if not name.startswith("OTEL_")}


def spans_in(output: str) -> list[dict[str, Any]]:
    """The spans the console exporter printed, one JSON object a line, among log lines."""
    spans = []
    for line in output.splitlines():
        if line.startswith("{") and '"context"' in line:
            span = json.loads(line)
            if "trace_id" in span.get("context", {}):
                spans.append(span)
    return spans


def hex_id(value: str) -> str:
    return value.removeprefix("0x")


async def read_messages(brokers: str, topic: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=brokers, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    messages: list[Any] = []
    try:

        async def all_read() -> bool:
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                messages.extend(batch)
            return len(messages) >= count

        await eventually(all_read, timeout=30, what=f"{count} messages on {topic}")
    finally:
        await consumer.stop()
    return messages


async def test_produced_order_is_traced_from_producer_to_lookup(
    start_worker: Any, pipeline_env: dict[str, str], http: aiohttp.ClientSession, kafka_brokers: str
) -> None:
    env = {**without_otel(pipeline_env), **CONSOLE}
    worker = await start_worker(**CONSOLE)
    produced = orderstream_command("produce", "-n", "3", env=env)
    uids = produced.stdout.split()
    assert len(uids) == 3, produced.stdout  # standard output keeps only the order ids

    # The producer: a span per message, whose context the message carries as traceparent.
    sends = {
        span["attributes"]["orderstream.order_uid"]: span
        for span in spans_in(produced.stderr)
        if span["name"].startswith("send ")
    }
    assert set(sends) == set(uids)
    assert {span["kind"] for span in sends.values()} == {"SpanKind.PRODUCER"}
    (producer_trace,) = {hex_id(span["context"]["trace_id"]) for span in sends.values()}
    messages = await read_messages(kafka_brokers, pipeline_env["KAFKA_TOPIC"], 3)
    for message in messages:
        uid = message.key.decode()
        (traceparent,) = [
            value.decode() for name, value in message.headers if name == "traceparent"
        ]
        match = TRACEPARENT.match(traceparent)
        assert match, traceparent
        assert match.groups() == (producer_trace, hex_id(sends[uid]["context"]["span_id"]))

    await wait_stored(pipeline_env["PG_URL"], set(uids))
    await eventually(lambda: served_from(http, worker, uids[0], "cache"), what="a cache hit")
    async with http.get(f"{worker.url}/order/{uids[1]}?nocache=1") as reply:
        assert reply.status == 200 and reply.headers["X-Source"] == "db"

    def worker_spans() -> list[dict[str, Any]]:
        return spans_in(worker.log())

    def lookups() -> dict[str, dict[str, Any]]:
        return {
            span["attributes"].get("orderstream.order_uid"): span
            for span in worker_spans()
            if span["name"] == "GET /order/{order_uid}"
        }

    async def both_lookups() -> Any:
        found = lookups()
        return uids[0] in found and uids[1] in found

    await eventually(both_lookups, what="the lookups' spans in the worker's output")

    spans = worker_spans()
    by_id = {hex_id(span["context"]["span_id"]): span for span in spans}
    batches = [span for span in spans if span["name"] == f"process {pipeline_env['KAFKA_TOPIC']}"]
    assert batches, "no batch span"
    linked = {
        hex_id(link["context"]["span_id"]): span for span in batches for link in span["links"]
    }
    # Every produced message's context is linked by a batch span of its trace.
    for send in sends.values():
        batch = linked[hex_id(send["context"]["span_id"])]
        assert hex_id(batch["context"]["trace_id"]) == producer_trace
        assert batch["kind"] == "SpanKind.CONSUMER"
        assert batch["attributes"]["messaging.destination.name"] == pipeline_env["KAFKA_TOPIC"]
        assert batch["resource"]["attributes"]["service.name"] == "orderstream-under-test"
        children = {
            span["name"]: span
            for span in spans
            if span["parent_id"]
            and hex_id(span["parent_id"]) == hex_id(batch["context"]["span_id"])
        }
        assert {"validate", "store", "dead_letter", "cache"} <= set(children), set(children)
        store = children["store"]
        # asyncpg's instrumentation: the batch's upsert is a PostgreSQL span under store.
        queries = [
            span
            for span in spans
            if span["parent_id"]
            and hex_id(span["parent_id"]) == hex_id(store["context"]["span_id"])
        ]
        assert queries and all(span["kind"] == "SpanKind.CLIENT" for span in queries)
        assert {
            span["attributes"].get("db.system") or span["attributes"].get("db.system.name")
            for span in queries
        } == {"postgresql"}
    # A lookup: the aiohttp server instrumentation's span, with the order and its source.
    found = lookups()
    assert found[uids[0]]["attributes"]["orderstream.source"] == "cache"
    assert found[uids[1]]["attributes"]["orderstream.source"] == "db"
    assert found[uids[0]]["kind"] == "SpanKind.SERVER"
    assert (
        found[uids[0]]["attributes"].get(
            "http.response.status_code", found[uids[0]]["attributes"].get("http.status_code")
        )
        == 200
    )
    db_lookup = hex_id(found[uids[1]]["context"]["span_id"])
    assert any(
        span["parent_id"]
        and hex_id(span["parent_id"]) == db_lookup
        and span["kind"] == "SpanKind.CLIENT"
        for span in spans
    ), "no asyncpg span under the ?nocache=1 lookup"
    assert all(span["context"]["span_id"] for span in by_id.values())


async def test_forwarded_lookup_continues_the_trace_on_the_owner(
    start_worker: Any,
    pipeline_env: dict[str, str],
    http: aiohttp.ClientSession,
    producer: AIOKafkaProducer,
) -> None:
    # Forwarded, not answered from the asked worker's standby copy (STANDBY_READ_MAX_LAG).
    first = await start_worker(**CONSOLE, STANDBY_READ_MAX_LAG="off")
    second = await start_worker(**CONSOLE, STANDBY_READ_MAX_LAG="off")
    orders = list(random_orders(21, 8))
    for order in orders:
        await producer.send(
            pipeline_env["KAFKA_TOPIC"], encode_order(order), key=order.order_uid.encode()
        )
    await producer.flush()
    await wait_stored(pipeline_env["PG_URL"], {order.order_uid for order in orders})

    async def forwarded() -> Any:
        """An order the second worker serves from its cache when the first is asked."""
        for order in orders:
            async with http.get(f"{first.url}/order/{order.order_uid}") as reply:
                if (
                    reply.status == 200
                    and reply.headers.get("X-Served-By") == second.url
                    and reply.headers.get("X-Source") == "cache"
                ):
                    return order.order_uid
        return None

    uid = await eventually(forwarded, timeout=60, what="a lookup forwarded to its owner")

    def lookup_spans(worker: Any) -> list[dict[str, Any]]:
        return [
            span
            for span in spans_in(worker.log())
            if span["name"] == "GET /order/{order_uid}"
            and span["attributes"].get("orderstream.order_uid") == uid
        ]

    async def joined() -> Any:
        asked = {hex_id(span["context"]["span_id"]): span for span in lookup_spans(first)}
        return [
            (asked[hex_id(span["parent_id"])], span)
            for span in lookup_spans(second)
            if span["parent_id"]
            and hex_id(span["parent_id"]) in asked
            and span["attributes"]["orderstream.source"] == "cache"
        ]

    ((asked, owner), *_) = await eventually(joined, what="the owner's span under the asker's")
    assert asked["context"]["trace_id"] == owner["context"]["trace_id"]
    assert owner["kind"] == asked["kind"] == "SpanKind.SERVER"
    assert asked["attributes"]["orderstream.source"] == "cache"  # the owner's X-Source


async def test_tracing_off_by_default_no_header_no_span(
    start_worker: Any, pipeline_env: dict[str, str], http: aiohttp.ClientSession, kafka_brokers: str
) -> None:
    env = without_otel(pipeline_env)
    worker = await start_worker()
    # start_worker's environment is pipeline_env: make sure it has no OTEL_* either.
    assert not [name for name in worker.env if name.startswith("OTEL_")]
    produced = orderstream_command("produce", "-n", "2", env=env)
    uids = produced.stdout.split()
    messages = await read_messages(kafka_brokers, pipeline_env["KAFKA_TOPIC"], 2)
    assert all(name != "traceparent" for message in messages for name, _ in (message.headers or ()))
    await wait_stored(pipeline_env["PG_URL"], set(uids))
    await eventually(lambda: served_from(http, worker, uids[0], "cache"), what="a cache hit")
    assert worker.stop() == 0
    assert spans_in(produced.stdout + produced.stderr) == []
    assert spans_in(worker.log()) == []
    assert '"trace_id"' not in worker.log()


@pytest.mark.parametrize(
    "name, value, reason",
    [
        ("OTEL_TRACES_EXPORTER", "zipkin", "Expected otlp, console"),
        ("OTEL_TRACES_SAMPLER", "sometimes", "Expected one of always_on"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5", "Expected a sampling ratio from 0 to 1."),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "Expected an http:// or https:// URL"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "Only http/protobuf is supported"),
    ],
)
def test_bad_otel_value_stops_start_up_naming_it(
    pipeline_env: dict[str, str], name: str, value: str, reason: str
) -> None:
    env = {**without_otel(pipeline_env), "OTEL_TRACES_EXPORTER": "console", name: value}
    result = subprocess.run(
        [sys.executable, "-m", "orderstream", "worker"],
        env=hermetic(env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"orderstream: Config {name!r} has value {value!r}. {reason}" in result.stderr
    assert "Traceback" not in result.stderr


async def test_otlp_exporter_sends_spans_to_the_endpoint(
    start_worker: Any,
    pipeline_env: dict[str, str],
    http: aiohttp.ClientSession,
    producer: AIOKafkaProducer,
) -> None:
    async with OtlpSink() as sink:
        worker = await start_worker(
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",
        )
        (order,) = list(random_orders(11, 1))
        # An order from a producer that traces nothing: the batch span starts its own trace.
        await producer.send_and_wait(
            pipeline_env["KAFKA_TOPIC"], encode_order(order), key=order.order_uid.encode()
        )
        await eventually(
            lambda: served_from(http, worker, order.order_uid, "cache"),
            what="the order served from the cache",
        )

        async def exported() -> Any:
            names = {name for name, _ in sink.spans}
            return f"process {pipeline_env['KAFKA_TOPIC']}" in names and [
                attributes
                for name, attributes in sink.spans
                if name == "GET /order/{order_uid}"
                and attributes.get("orderstream.order_uid") == order.order_uid
                and attributes.get("orderstream.source") == "cache"
            ]

        (lookup, *_) = await eventually(exported, what="the batch and cache hit spans at the sink")
        assert lookup["http.route"] == "/order/{order_uid}"
        assert {"store", "cache", "validate"} <= {name for name, _ in sink.spans}
        assert worker.stop() == 0


async def test_sampler_always_off_exports_nothing(
    start_worker: Any,
    pipeline_env: dict[str, str],
    http: aiohttp.ClientSession,
    producer: AIOKafkaProducer,
) -> None:
    async with OtlpSink() as sink:
        worker = await start_worker(
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint,
            OTEL_TRACES_SAMPLER="always_off",
            OTEL_BSP_SCHEDULE_DELAY="100",
        )
        (order,) = list(random_orders(12, 1))
        await producer.send_and_wait(
            pipeline_env["KAFKA_TOPIC"], encode_order(order), key=order.order_uid.encode()
        )
        await eventually(
            lambda: served_from(http, worker, order.order_uid, "cache"),
            what="the order served from the cache",
        )
        assert worker.stop() == 0  # a stopping worker exports what it has: nothing
        assert sink.spans == [] and sink.requests == 0


# --- in-process, with the SDK's in-memory exporter ----------------------------------------


@pytest.fixture
def memory_spans() -> Any:
    """Tracing on in this process, its spans kept in memory; off again afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.uninstall()
    provider.shutdown()


class Message:
    """The part of a Faust event the batch span reads: a message read from Kafka."""

    def __init__(self, record: Any) -> None:
        self.message = record


async def test_batch_span_continues_and_links_the_messages_contexts(
    memory_spans: InMemorySpanExporter,
    producer: AIOKafkaProducer,
    kafka_brokers: str,
    unique_name: str,
) -> None:
    topic = f"orders-{unique_name}"
    orders = list(random_orders(7, 3))
    with tracing.step("produce"):
        for order in orders:
            with tracing.producing(topic, order.order_uid) as headers:
                await producer.send(
                    topic,
                    encode_order(order),
                    key=order.order_uid.encode(),
                    headers=headers,
                    partition=0,
                )
    await producer.flush()
    # One more message from another trace, and one without a context.
    with tracing.producing(topic, "other") as other_headers:
        await producer.send_and_wait(topic, b"{}", key=b"other", headers=other_headers, partition=0)
    await producer.send_and_wait(topic, b"{}", key=b"plain", partition=0)
    sends = {
        span.attributes["orderstream.order_uid"]: span
        for span in memory_spans.get_finished_spans()
        if span.name == f"send {topic}"
    }
    records = await read_messages(kafka_brokers, topic, 5)

    first_three = [Message(record) for record in records[:3]]
    batch = tracing.start_batch(topic, first_three)
    assert batch is not None
    with tracing.within(batch, "validate"):
        pass
    await tracing.run_in(batch, asyncio.sleep(0))
    finished = finished_by_name(memory_spans)
    span = finished[f"process {topic}"]
    trace_id = sends[orders[0].order_uid].context.trace_id
    assert span.context.trace_id == trace_id  # one trace in: the batch continues it
    assert [link.context.span_id for link in span.links] == [
        sends[order.order_uid].context.span_id for order in orders
    ]
    assert span.attributes["messaging.batch.message_count"] == 3
    assert finished["validate"].parent.span_id == span.context.span_id

    memory_spans.clear()
    mixed = tracing.start_batch(topic, [Message(record) for record in records])
    assert mixed is not None
    mixed.end()
    (span,) = memory_spans.get_finished_spans()
    assert span.context.trace_id not in {trace_id, sends.get("other", span).context.trace_id}
    assert span.parent is None  # two traces in: a trace of its own, linked to both
    assert len(span.links) == 4
    assert span.attributes["orderstream.messages_with_trace_context"] == 4


async def test_asyncpg_statements_are_spans_under_the_current_one(
    memory_spans: InMemorySpanExporter, clean_database: str
) -> None:
    repo = OrderRepository(clean_database)
    await repo.connect()
    try:
        (order,) = list(random_orders(3, 1))
        with tracing.step("store", orders=1):
            await repo.upsert_many([order])
        assert await repo.get_body(order.order_uid) is not None
    finally:
        await repo.close()
    finished = memory_spans.get_finished_spans()
    store = next(span for span in finished if span.name == "store")
    under_store = [
        span
        for span in finished
        if span.parent is not None and span.parent.span_id == store.context.span_id
    ]
    assert under_store and under_store[0].attributes is not None
    assert "orders" in str(
        under_store[0].attributes.get("db.statement")
        or under_store[0].attributes.get("db.query.text")
    )
    assert store.attributes == {"orderstream.orders": 1}


def finished_by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}
