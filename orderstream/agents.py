"""The agents: consume orders, store them durably, then cache them.

register(app) declares them on the app create_app builds: ``store_orders`` (orders topic ->
PostgreSQL -> cache-updates topic), ``cache_orders`` (cache-updates topic -> the cache Table)
and the ``warm_up_when_empty`` task. The loops are thin; the named helpers here and in
orderstream/cache/ do the work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, cast

import faust
import orjson
from faust.types import EventT, StreamT

from . import metrics, tracing
from .cache.entry import encode_entry
from .cache.updates import apply_cache_update, send_to_cache, warm_up_when_empty
from .logs import event_position, order_context
from .order import InvalidOrder, Order, decode_order_and_body
from .repo import DatabaseUnavailable, OrderRejected
from .republish import Outgoing, dead_letter_stub, publish_all, without_headers
from .shutdown import exit_unfinished, run_to_completion
from .write_groups import partition_groups

if TYPE_CHECKING:
    from .app import OrderApp

logger = logging.getLogger(__name__)

RETRY_FIRST_DELAY = 0.1


@dataclass(frozen=True, eq=False)
class Accepted:
    event: EventT
    order: Order
    key: bytes
    body: bytes
    partition: int  # the order_uid's


@dataclass(frozen=True)
class Rejected:
    event: EventT
    reason: str
    error: str
    order_uid: str | None = None


@dataclass
class Triage:
    """A batch triaged: orders to store, messages to dead-letter, orders to forward."""

    accepted: list[Accepted]
    rejected: list[Rejected]
    misplaced: list[Accepted]


def triage(
    events: Iterable[EventT], *, partition_for: Callable[[bytes], int], max_clock_skew: float
) -> Triage:
    """Split a batch: orders to store, messages to dead-letter, orders on the wrong partition.

    An order belongs on the partition its order_uid hashes to, because that partition's
    owner holds its cache entry; an order that arrived elsewhere is forwarded there. An order
    created more than ``max_clock_skew`` seconds after now is invalid.
    """
    result = Triage([], [], [])
    latest = datetime.now(UTC) + timedelta(seconds=max_clock_skew)
    for event in events:
        try:
            order, body = decode_order_and_body(event.value, latest=latest)
        except InvalidOrder as exc:
            result.rejected.append(
                Rejected(event, exc.reason, str(exc), claimed_order_uid(event.value))
            )
            continue
        key = order.order_uid.encode()
        accepted = Accepted(event, order, key, body, partition_for(key))
        if event.message.partition == accepted.partition:
            result.accepted.append(accepted)
        else:
            result.misplaced.append(accepted)
    return result


def claimed_order_uid(raw: bytes) -> str | None:
    """The order_uid a rejected message carries, if any, for its log line."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    uid = data.get("order_uid") if isinstance(data, dict) else None
    return uid if isinstance(uid, str) else None


SOURCE_HEADERS = ("x-source-topic", "x-source-partition", "x-source-offset")
ERROR_HEADERS = ("x-error-reason", "x-error")
# Set by `dlq replay` (dead_letters.py); a replayed message dead-lettered again keeps it, as
# one of its own headers, even in a stub.
REPLAYED_FROM = "x-replayed-from"
# An order too large to forward to its partition is dead-lettered with this reason.
TOO_LARGE_TO_FORWARD = "too_large"


def source_headers(event: EventT) -> list[tuple[str, bytes]]:
    message = event.message
    return [
        *(message.headers or []),
        ("x-source-topic", message.topic.encode()),
        ("x-source-partition", str(message.partition).encode()),
        ("x-source-offset", str(message.offset).encode()),
    ]


async def dead_letter(app: OrderApp, rejected: Sequence[Rejected]) -> None:
    """Publish bad messages, unchanged, with the reason in headers; wait until Kafka has them.

    One that Kafka refuses as too large goes as a stub (republish.py): its position is
    always recorded, and ingest moves on.
    """
    letters = []
    for item in rejected:
        message = item.event.message
        logger.warning(
            "Dead-lettering order %s at %s: %s",
            item.order_uid,
            event_position(item.event),
            item.error[:1000],
            extra=order_context(item.event, item.order_uid),
        )
        letters.append(
            Outgoing(
                app.dead_letter_topic.get_topic_name(),
                message.key,
                message.value,
                [
                    *source_headers(item.event),
                    ("x-error-reason", item.reason.encode()),
                    ("x-error", item.error.encode()[:4096]),
                ],
            )
        )
    refused = await publish_all(
        app.batch_producer,
        letters,
        lambda letter: dead_letter_stub(
            letter, keep=SOURCE_HEADERS + ERROR_HEADERS + (REPLAYED_FROM,)
        ),
    )
    if refused:
        raise RuntimeError(f"Kafka refused even the stub of {len(refused)} dead letters")
    for item in rejected:
        metrics.orders_dead_lettered.labels(item.reason).inc()


async def forward_to_owner(app: OrderApp, misplaced: Sequence[Accepted]) -> None:
    """Re-publish orders to their order_uid's partition, keyed by order_uid.

    One too large for Kafka with its original headers goes without them; one too large even
    then is dead-lettered as ``too_large`` (it can be replayed once the topic takes it).
    """
    orders_topic = app.orders_topic.get_topic_name()
    messages: list[Outgoing] = []
    for item in misplaced:
        logger.debug(
            "Forwarding order %s from %s to partition %d",
            item.order.order_uid,
            event_position(item.event),
            item.partition,
            extra=order_context(item.event, item.order.order_uid),
        )
        messages.append(
            Outgoing(
                orders_topic,
                item.key,
                item.event.message.value,
                source_headers(item.event),
                item.partition,
            )
        )
    refused = await publish_all(
        app.batch_producer, messages, lambda message: without_headers(message, keep=SOURCE_HEADERS)
    )
    if refused:
        await dead_letter(
            app,
            [
                Rejected(
                    misplaced[index].event,
                    TOO_LARGE_TO_FORWARD,
                    f"{TOO_LARGE_TO_FORWARD}: the order does not fit in a "
                    f"Kafka message of {orders_topic}",
                    misplaced[index].order.order_uid,
                )
                for index in refused
            ],
        )
    metrics.orders_forwarded.inc(len(misplaced) - len(refused))


class Outage:
    """PostgreSQL unavailable to a batch's writers (one per group): logged once, when the
    first of them meets it, and over once the last of them has written."""

    def __init__(self) -> None:
        self.started = 0.0
        self.waiting = 0  # writers retrying

    def begin(self, exc: DatabaseUnavailable) -> None:
        if self.waiting == 0:
            self.started = time.monotonic()
            logger.error("PostgreSQL unavailable, pausing consumption: %s", exc)
        self.waiting += 1

    def end(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            logger.warning(
                "PostgreSQL is back after %.1f s; consumption resumes",
                time.monotonic() - self.started,
            )


async def store_until_durable(
    app: OrderApp, orders: Sequence[Accepted], outage: Outage | None = None
) -> set[str]:
    """Upsert the orders in one transaction, retrying with capped backoff while PostgreSQL is
    unavailable.

    Never gives up: moving on would commit offsets of orders that are not stored. Returns the
    order_uids written: not those whose stored copy comes from a later message (the version
    is the message's offset on the order's own partition, which every accepted order is on).
    """
    outage = outage or Outage()
    delay = RETRY_FIRST_DELAY
    retrying = False
    while True:
        try:
            started = time.perf_counter()
            written = await app.repo.upsert_encoded(
                (item.order.order_uid, item.body, item.event.message.offset) for item in orders
            )
        except DatabaseUnavailable as exc:
            metrics.db_unavailable.inc()
            if not retrying:
                retrying = True
                outage.begin(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, app.settings.db_retry_max)
            continue
        if retrying:
            outage.end()
        if orders:
            metrics.db_batch_seconds.observe(time.perf_counter() - started)
            metrics.db_batch_size.observe(len(orders))
        return written


async def store_isolating_rejects(
    app: OrderApp, batch: Sequence[Accepted]
) -> tuple[set[str], list[Accepted]]:
    """Store a batch on PG_WRITE_CONNECTIONS connections at once, split by partition
    (write_groups.py); return the order_uids written and the orders PostgreSQL refuses.

    Each group is one transaction: one refused, or cut short by an outage, is written again
    on its own while the others stay committed (writing one again would change nothing: the
    versions make an upsert idempotent).
    """
    groups = partition_groups(batch, lambda item: item.partition, app.settings.pg_write_connections)
    tracing.annotate(groups=len(groups))
    outage = Outage()
    if len(groups) == 1:
        return await store_group(app, groups[0], outage)
    results = await asyncio.gather(*(store_group(app, group, outage) for group in groups))
    written: set[str] = set()
    refused: list[Accepted] = []
    for group_written, group_refused in results:
        written |= group_written
        refused += group_refused
    return written, refused


async def store_group(
    app: OrderApp, group: Sequence[Accepted], outage: Outage
) -> tuple[set[str], list[Accepted]]:
    """Store a group; when PostgreSQL refuses it, store its orders one by one to find those
    it refuses."""
    try:
        return await store_until_durable(app, group, outage), []
    except OrderRejected:
        if len(group) == 1:
            return set(), list(group)
    written: set[str] = set()
    refused = []
    for item in group:
        try:
            written |= await store_until_durable(app, [item], outage)
        except OrderRejected:
            refused.append(item)
    return written, refused


def register(app: OrderApp) -> None:
    """Declare the agents and the warm-up task on ``app``."""
    settings = app.settings

    @app.agent(app.orders_topic, name="orderstream.agents.store_orders")
    async def store_orders(stream: StreamT[bytes]) -> None:
        """Validate, persist and cache incoming orders, at least once.

        Batches overlap: one is validated while the one before it is written, so this process
        and PostgreSQL work side by side; writes stay in order, one batch at a time. Events
        are acked by hand, once their batch is stored and cached: a batch abandoned half-way
        is never committed, Kafka delivers it again.
        """
        writing: asyncio.Future[None] | None = None
        try:
            batches = cast(faust.Stream, stream).noack_take(
                settings.batch_size,  # not in StreamT
                within=settings.batch_wait,
            )
            async for events in batches:
                span = tracing.start_batch(settings.kafka_topic, events)  # None: tracing off
                try:
                    with tracing.within(span, "validate"):
                        batch = triage(
                            events,
                            partition_for=app.recent_orders.partition_for,
                            max_clock_skew=settings.max_clock_skew,
                        )
                except Exception:
                    exit_unfinished("Unexpected error while validating a batch")
                if writing is not None:
                    await run_to_completion(writing)
                writing = tracing.run_in(span, write_batch(app, stream, events, batch))
        finally:
            # Stopping: finish the batch in hand (shutdown.py bounds how long that may take).
            if writing is not None and not writing.done():
                await run_to_completion(writing)

    @app.agent(app.cache_updates_topic, name="orderstream.agents.cache_orders")
    async def cache_orders(stream: StreamT[bytes]) -> None:
        """Write stored orders into the cache Table; a warm-up never replaces a newer entry."""
        async for event in stream.events():
            await apply_cache_update(app.recent_orders, event)

    @app.task
    async def warm_up() -> None:
        """Fill an empty cache with the newest stored orders (the Go service's LoadRecent)."""
        await warm_up_when_empty(app)


async def write_batch(
    app: OrderApp, stream: StreamT[bytes], events: Sequence[EventT], batch: Triage
) -> None:
    """Forward, store, dead-letter and cache one batch, then ack it; a bug ends the process."""
    try:
        metrics.orders_consumed.inc(len(events))
        with tracing.step("forward", orders=len(batch.misplaced)):
            await forward_to_owner(app, batch.misplaced)
        with tracing.step("store", orders=len(batch.accepted)):
            # No remembered miss of these orders outlives their write (cache/negative.py).
            with app.unknown_orders.storing([item.order.order_uid for item in batch.accepted]):
                written, refused = await store_isolating_rejects(app, batch.accepted)
            tracing.annotate(written=len(written), refused=len(refused))
        with tracing.step("dead_letter", messages=len(batch.rejected) + len(refused)):
            await dead_letter(
                app,
                [
                    *batch.rejected,
                    *(
                        Rejected(
                            item.event,
                            "db_rejected",
                            "PostgreSQL refused the order",
                            item.order.order_uid,
                        )
                        for item in refused
                    ),
                ],
            )
        stored = [item for item in batch.accepted if item.order.order_uid in written]
        superseded = len(batch.accepted) - len(refused) - len(stored)
        if superseded:
            # A later message of these orders is stored already: a replay, or a worker that
            # stalled past its session while another took its partitions over.
            logger.info(
                "%d orders not stored: a later version of each is stored already", superseded
            )
            metrics.orders_superseded.inc(superseded)
        metrics.orders_stored.inc(len(stored))
        with tracing.step("cache", orders=len(stored)):
            await send_to_cache(
                app,
                [
                    (item.partition, item.key, encode_entry(item.event.message.offset, item.body))
                    for item in stored
                ],
            )
    except Exception:
        exit_unfinished("Unexpected error while handling a batch")
    for event in events:
        await stream.ack(event)
