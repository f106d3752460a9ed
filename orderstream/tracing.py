"""Tracing with OpenTelemetry: off unless OTEL_TRACES_EXPORTER names an exporter.

setup(settings) installs the SDK once per process (a TracerProvider with the OTEL_* settings'
exporters, sampler and service name), instruments asyncpg, and the helpers below start the
service's own spans: `produce` puts each message's W3C ``traceparent`` in its Kafka headers,
the orders agent makes one span per batch linked to its messages' contexts (validate, forward,
store, dead-letter and cache as children), and each order lookup gets the aiohttp server
instrumentation's span with the order_uid and the source.

Off (the default) nothing is imported from the SDK or instrumented: a lookup runs the very
handler it runs without tracing (the choice is made when the routes are registered), and a
batch pays a few checks of ``_tracer is None``; nothing is done per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

from .config import Settings

if TYPE_CHECKING:
    from aiohttp import web as aioweb
    from faust.types import EventT
    from opentelemetry.propagators.textmap import Getter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, SpanContext, Tracer

T = TypeVar("T")

# Most span links of one batch span (a batch is up to BATCH_SIZE messages; links past the
# bound are dropped, and the count of messages with a context is an attribute).
MAX_BATCH_LINKS = 64

# Attributes of the service's own (README "Tracing").
ORDER_UID = "orderstream.order_uid"
SOURCE = "orderstream.source"

_provider: TracerProvider | None = None
_tracer: Tracer | None = None
# Reusable: enters and exits, nothing else.
_NOTHING: AbstractContextManager[Any] = contextlib.nullcontext()

Handler = Callable[["aioweb.Request"], Awaitable["aioweb.StreamResponse"]]


def enabled() -> bool:
    return _tracer is not None


def setup(settings: Settings) -> bool:
    """Install the SDK as the OTEL_* settings say, once per process; False when tracing is off.

    The OTLP exporter (OTLP over HTTP) takes OTEL_EXPORTER_OTLP_ENDPOINT (default
    http://localhost:4318) and its other OTEL_EXPORTER_OTLP_* variables from the environment;
    spans are exported in batches by a background thread (OTEL_BSP_* tune it), and what is
    pending is exported when the process exits.
    """
    if not settings.otel_traces_exporter or settings.otel_sdk_disabled:
        return False
    if _tracer is not None:
        return True
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from . import __version__

    provider = TracerProvider(
        # OTEL_RESOURCE_ATTRIBUTES adds to these; OTEL_SERVICE_NAME is the settings' (checked).
        resource=Resource.create(
            {SERVICE_NAME: settings.otel_service_name, SERVICE_VERSION: __version__}
        ),
        sampler=sampler(settings.otel_traces_sampler, settings.otel_traces_sampler_arg),
    )
    for name in settings.otel_traces_exporter:
        provider.add_span_processor(BatchSpanProcessor(exporter(name)))
    install(provider)
    return True


def sampler(name: str, ratio: float) -> Any:
    """OTEL_TRACES_SAMPLER (and its ratio argument) as the SDK's sampler."""
    from opentelemetry.sdk.trace import sampling

    return {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": sampling.TraceIdRatioBased(ratio),
        "parentbased_always_on": sampling.ParentBased(sampling.ALWAYS_ON),
        "parentbased_always_off": sampling.ParentBased(sampling.ALWAYS_OFF),
        "parentbased_traceidratio": sampling.ParentBasedTraceIdRatio(ratio),
    }[name]


def exporter(name: str) -> Any:
    """The exporter of one OTEL_TRACES_EXPORTER name."""
    if name == "console":
        import os
        import sys

        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        # One JSON object a line, on standard error: the worker's output beside its log, and
        # `produce` keeps its standard output for the order ids it prints.
        return ConsoleSpanExporter(
            out=sys.stderr, formatter=lambda span: span.to_json(indent=None) + os.linesep
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def install(provider: TracerProvider) -> None:
    """Trace with ``provider`` from now on: setup()'s, or a test's with an in-memory exporter."""
    global _provider, _tracer
    from opentelemetry import trace
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    from . import __version__

    if _provider is None:
        trace.set_tracer_provider(provider)  # for other libraries' spans; once per process
    # The aiohttp server instrumentor sets up what its middleware uses (excluded URLs, its
    # meters); instrument_web() gives the middleware to Faust's application.
    for instrumentor in (AsyncPGInstrumentor(), AioHttpServerInstrumentor()):
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        instrumentor.instrument(tracer_provider=provider)
    _provider = provider
    _tracer = provider.get_tracer("orderstream", __version__)


def uninstall() -> None:
    """Stop tracing (a test's provider): uninstrumented, the helpers back to nothing.
    Apps built before keep their lookup spans."""
    global _tracer
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    for instrumentor in (AsyncPGInstrumentor(), AioHttpServerInstrumentor()):
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
    _tracer = None


def shutdown() -> None:
    """Export what is pending (the SDK does this at exit too)."""
    if _provider is not None:
        _provider.force_flush()


# --- Kafka: W3C trace context in message headers ----------------------------------------


KafkaHeaders = Sequence[tuple[str, bytes]]


@functools.cache
def kafka_headers_getter() -> Getter[KafkaHeaders]:
    """The propagators' getter over Kafka headers, a sequence of (name, bytes) pairs."""
    from opentelemetry.propagators.textmap import Getter

    class KafkaHeadersGetter(Getter[KafkaHeaders]):
        def get(self, carrier: KafkaHeaders, key: str) -> list[str] | None:
            values = [value.decode("latin-1") for name, value in carrier if name == key and value]
            return values or None

        def keys(self, carrier: KafkaHeaders) -> list[str]:
            return [name for name, _ in carrier]

    return KafkaHeadersGetter()


@contextlib.contextmanager
def _producing(topic: str, order_uid: str) -> Iterator[list[tuple[str, bytes]]]:
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    assert _tracer is not None
    with _tracer.start_as_current_span(
        f"send {topic}",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
            "messaging.kafka.message.key": order_uid,
            ORDER_UID: order_uid,
        },
    ):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield [(name, value.encode()) for name, value in carrier.items()]


def producing(topic: str, order_uid: str) -> AbstractContextManager[list[tuple[str, bytes]] | None]:
    """A PRODUCER span for one message; enters as the Kafka headers to send it with
    (``traceparent``, and ``tracestate``/``baggage`` when there are any), None when off."""
    return _NOTHING if _tracer is None else _producing(topic, order_uid)


def message_contexts(events: Sequence[EventT]) -> tuple[list[SpanContext], int, set[int]]:
    """The valid span contexts the messages carry (at most MAX_BATCH_LINKS), how many carry
    one, and their trace ids."""
    from opentelemetry import propagate, trace

    getter = kafka_headers_getter()
    contexts: list[SpanContext] = []
    carried, trace_ids = 0, set()
    for event in events:
        headers = event.message.headers
        if not headers:
            continue
        pairs = list(headers.items()) if isinstance(headers, Mapping) else headers
        span_context = trace.get_current_span(
            propagate.extract(pairs, getter=getter)
        ).get_span_context()
        if not span_context.is_valid:
            continue
        carried += 1
        trace_ids.add(span_context.trace_id)
        if len(contexts) < MAX_BATCH_LINKS:
            contexts.append(span_context)
    return contexts, carried, trace_ids


def start_batch(topic: str, events: Sequence[EventT]) -> Span | None:
    """The span of one batch of the orders topic, linked to each message's context; None when
    off. When the batch's messages carry one trace (one `produce` run, one message) the span
    continues it as a child of the first; otherwise it starts a trace of its own."""
    if _tracer is None:
        return None
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace import Link, SpanKind

    contexts, carried, trace_ids = message_contexts(events)
    parent = (
        trace.set_span_in_context(trace.NonRecordingSpan(contexts[0]))
        if len(trace_ids) == 1
        else Context()
    )
    return _tracer.start_span(
        f"process {topic}",
        context=parent,
        kind=SpanKind.CONSUMER,
        links=[Link(context) for context in contexts],
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": topic,
            "messaging.batch.message_count": len(events),
            "orderstream.messages_with_trace_context": carried,
        },
    )


@contextlib.contextmanager
def _within(batch: Span, name: str) -> Iterator[None]:
    from opentelemetry import trace

    assert _tracer is not None
    with trace.use_span(batch, end_on_exit=False), _tracer.start_as_current_span(name):
        yield


def within(batch: Span | None, name: str) -> AbstractContextManager[Any]:
    """A child span ``name`` of the batch span (validating the batch); nothing when off."""
    return _NOTHING if batch is None else _within(batch, name)


def run_in(batch: Span | None, work: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """Run ``work`` as a task inside the batch span, which ends when the task does."""
    if batch is None:
        return asyncio.ensure_future(work)
    from opentelemetry import trace

    with trace.use_span(batch, end_on_exit=False):
        task = asyncio.ensure_future(work)  # the task copies the context: the span is current
    task.add_done_callback(lambda _: batch.end())
    return task


def step(name: str, **attributes: int) -> AbstractContextManager[Any]:
    """A child span of the current one (a batch's store, dead_letter, cache ...); nothing when
    off."""
    if _tracer is None:
        return _NOTHING
    return _tracer.start_as_current_span(
        name, attributes={f"orderstream.{key}": value for key, value in attributes.items()}
    )


def annotate(**attributes: int) -> None:
    """Set ``orderstream.<name>`` attributes on the current span (counts of a batch's step)."""
    if _tracer is None:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    for key, value in attributes.items():
        span.set_attribute(f"orderstream.{key}", value)


# --- HTTP ---------------------------------------------------------------------------------


def instrument_web(web_app: aioweb.Application) -> None:
    """Give Faust's aiohttp application the aiohttp server instrumentation's middleware (a
    SERVER span per request, continuing a ``traceparent`` the request carries). The
    instrumentor's own hook replaces ``aiohttp.web.Application``, which Faust imported before."""
    if _tracer is None:
        return
    from opentelemetry.instrumentation.aiohttp_server import create_aiohttp_middleware

    web_app.middlewares.insert(0, create_aiohttp_middleware(tracer_provider=_provider))


def traced_lookup(handler: Handler) -> Handler:
    """The order lookup with its order_uid and source (X-Source: cache or db) on the request's
    span; ``handler`` itself when off."""
    if _tracer is None:
        return handler
    from opentelemetry import trace

    async def lookup(request: aioweb.Request) -> aioweb.StreamResponse:
        response = await handler(request)
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute(ORDER_UID, request.match_info.get("order_uid", ""))
            source = response.headers.get("X-Source")
            if source:
                span.set_attribute(SOURCE, source)
        return response

    return lookup


def inject(headers: dict[str, str]) -> None:
    """Add the current trace context to an outgoing request's headers (a forwarded lookup)."""
    if _tracer is None:
        return
    from opentelemetry import propagate

    propagate.inject(headers)
