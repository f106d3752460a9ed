"""The agents: consume orders, store them durably, then cache them."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, cast

import faust
import orjson
from faust.exceptions import NotReady, ProducerSendError
from faust.types import EventT, StreamT

from . import metrics
from .app import app, cache_updates_topic, dead_letter_topic, orders_topic, settings
from .bundles import MalformedBundle, bundle, unbundle
from .cache_entry import encode_entry
from .models import InvalidOrder, Order, decode_order_and_body, encode_order
from .logs import order_context, where
from .repo import DatabaseUnavailable, OrderRejected
from .republish import Outgoing, dead_letter_stub, publish_all, without_headers
from .shutdown import exit_unfinished, run_to_completion
from .tables import partition_of, recent_orders

logger = logging.getLogger(__name__)

RETRY_FIRST_DELAY = 0.1
# On a cache update: the order comes from the warm-up and must not replace a newer entry.
WARM_UP_HEADER = "x-cache-warm-up"


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
    order_uid: Optional[str] = None


@dataclass
class Sorted:
    accepted: list[Accepted]
    rejected: list[Rejected]
    misplaced: list[Accepted]


def sort_events(events: Iterable[EventT]) -> Sorted:
    """Split a batch into orders to store, messages to dead-letter and orders on the wrong partition.

    An order belongs on the partition its order_uid hashes to, because that partition's
    owner holds its cache entry; an order that arrived elsewhere is forwarded there.
    """
    result = Sorted([], [], [])
    latest = datetime.now(timezone.utc) + timedelta(seconds=settings.max_clock_skew)
    for event in events:
        try:
            order, body = decode_order_and_body(event.value, latest=latest)
        except InvalidOrder as exc:
            result.rejected.append(Rejected(event, exc.reason, str(exc),
                                            claimed_order_uid(event.value)))
            continue
        key = order.order_uid.encode()
        accepted = Accepted(event, order, key, body, partition_of(key))
        if event.message.partition == accepted.partition:
            result.accepted.append(accepted)
        else:
            result.misplaced.append(accepted)
    return result


def claimed_order_uid(raw: bytes) -> Optional[str]:
    """The order_uid a rejected message carries, if any, for its log line."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    uid = data.get("order_uid") if isinstance(data, dict) else None
    return uid if isinstance(uid, str) else None


SOURCE_HEADERS = ("x-source-topic", "x-source-partition", "x-source-offset")
ERROR_HEADERS = ("x-error-reason", "x-error")
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


async def dead_letter(rejected: Sequence[Rejected]) -> None:
    """Publish bad messages, unchanged, with the reason in headers; wait until Kafka has them.

    One that Kafka refuses as too large goes as a stub (republish.py): its position is
    always recorded, and ingest moves on.
    """
    letters = []
    for item in rejected:
        message = item.event.message
        logger.warning("Dead-lettering order %s at %s: %s", item.order_uid, where(item.event),
                       item.error[:1000], extra=order_context(item.event, item.order_uid))
        letters.append(Outgoing(
            dead_letter_topic.get_topic_name(), message.key, message.value,
            [*source_headers(item.event), ("x-error-reason", item.reason.encode()),
             ("x-error", item.error.encode()[:4096])]))
    refused = await publish_all(app.batch_producer, letters, lambda letter: dead_letter_stub(
        letter, keep=SOURCE_HEADERS + ERROR_HEADERS))
    if refused:
        raise RuntimeError(f"Kafka refused even the stub of {len(refused)} dead letters")
    for item in rejected:
        metrics.orders_dead_lettered.labels(item.reason).inc()


async def forward_to_owner(misplaced: Sequence[Accepted]) -> None:
    """Re-publish orders to their order_uid's partition, keyed by order_uid.

    One too large for Kafka with its original headers goes without them; one too large even
    then is dead-lettered as ``too_large`` (it can be replayed once the topic takes it).
    """
    messages: list[Outgoing] = []
    for item in misplaced:
        logger.debug("Forwarding order %s from %s to partition %d", item.order.order_uid,
                     where(item.event), item.partition,
                     extra=order_context(item.event, item.order.order_uid))
        messages.append(Outgoing(orders_topic.get_topic_name(), item.key,
                                 item.event.message.value, source_headers(item.event),
                                 item.partition))
    refused = await publish_all(app.batch_producer, messages,
                                lambda message: without_headers(message, keep=SOURCE_HEADERS))
    if refused:
        await dead_letter([Rejected(misplaced[index].event, TOO_LARGE_TO_FORWARD,
                                    f"{TOO_LARGE_TO_FORWARD}: the order does not fit in a Kafka "
                                    f"message of {orders_topic.get_topic_name()}",
                                    misplaced[index].order.order_uid) for index in refused])
    metrics.orders_forwarded.inc(len(misplaced) - len(refused))


async def store_until_durable(orders: Sequence[Accepted]) -> set[str]:
    """Upsert the batch, retrying with capped backoff while PostgreSQL is unavailable.

    Never gives up: moving on would commit offsets of orders that are not stored. Returns the
    order_uids written: not those whose stored copy comes from a later message (the version
    is the message's offset on the order's own partition, which every accepted order is on).
    """
    delay = RETRY_FIRST_DELAY
    outage_started: float | None = None
    while True:
        try:
            started = time.perf_counter()
            written = await app.repo.upsert_encoded(
                (item.order.order_uid, item.body, item.event.message.offset) for item in orders)
        except DatabaseUnavailable as exc:
            metrics.db_unavailable.inc()
            if outage_started is None:
                outage_started = time.monotonic()
                logger.error("PostgreSQL unavailable, pausing consumption: %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.db_retry_max)
            continue
        if outage_started is not None:
            logger.warning("PostgreSQL is back after %.1f s; consumption resumes",
                           time.monotonic() - outage_started)
        if orders:
            metrics.db_batch_seconds.observe(time.perf_counter() - started)
            metrics.db_batch_size.observe(len(orders))
        return written


async def store_isolating_rejects(batch: Sequence[Accepted]) -> tuple[set[str], list[Accepted]]:
    """Store a batch; return the order_uids written and, when PostgreSQL refuses the batch,
    the orders it refuses (stored one by one to find them)."""
    try:
        return await store_until_durable(batch), []
    except OrderRejected:
        if len(batch) == 1:
            return set(), list(batch)
    written: set[str] = set()
    refused = []
    for item in batch:
        try:
            written |= await store_until_durable([item])
        except OrderRejected:
            refused.append(item)
    return written, refused


@app.agent(orders_topic)
async def store_orders(stream: StreamT[bytes]) -> None:
    """Validate, persist and cache incoming orders, at least once.

    Batches overlap: one is validated while the one before it is written, so this process
    and PostgreSQL work side by side; writes stay in order, one batch at a time. Events are
    acked by hand, once their batch is stored and cached: a batch abandoned half-way is
    never committed, Kafka delivers it again.
    """
    writing: Optional[asyncio.Future[None]] = None
    try:
        batches = cast(faust.Stream, stream).noack_take(settings.batch_size,  # not in StreamT
                                                        within=settings.batch_wait)
        async for events in batches:
            try:
                batch = sort_events(events)
            except Exception:
                exit_unfinished("Unexpected error while validating a batch")
            if writing is not None:
                await run_to_completion(writing)
            writing = asyncio.ensure_future(write_batch(stream, events, batch))
    finally:
        # Stopping: finish the batch in hand (shutdown.py bounds how long that may take).
        if writing is not None and not writing.done():
            await run_to_completion(writing)


async def write_batch(stream: StreamT[bytes], events: Sequence[EventT], batch: Sorted) -> None:
    """Forward, store, dead-letter and cache one batch, then ack it; a bug ends the process."""
    try:
        metrics.orders_consumed.inc(len(events))
        await forward_to_owner(batch.misplaced)
        written, refused = await store_isolating_rejects(batch.accepted)
        await dead_letter([*batch.rejected, *(
            Rejected(item.event, "db_rejected", "PostgreSQL refused the order",
                     item.order.order_uid)
            for item in refused)])
        stored = [item for item in batch.accepted if item.order.order_uid in written]
        superseded = len(batch.accepted) - len(refused) - len(stored)
        if superseded:
            # A later message of these orders is stored already: a replay, or a worker that
            # stalled past its session while another took its partitions over.
            logger.info("%d orders not stored: a later version of each is stored already",
                        superseded)
            metrics.orders_superseded.inc(superseded)
        metrics.orders_stored.inc(len(stored))
        await update_cache([(item.partition, item.key,
                             encode_entry(item.event.message.offset, item.body))
                            for item in stored])
    except Exception:
        exit_unfinished("Unexpected error while handling a batch")
    for event in events:
        await stream.ack(event)


async def update_cache(entries: Sequence[tuple[int, bytes, bytes]], *,
                       warm_up: bool = False) -> None:
    """Send stored orders (partition, key, Table value) to the cache agent, bundled by partition."""
    if not recent_orders.enabled or not entries:
        return
    by_partition: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
    for partition, key, body in entries:
        by_partition[partition].append((key, body))
    headers = [(WARM_UP_HEADER, b"1")] if warm_up else None
    sent = [await cache_updates_topic.send(value=data, partition=partition, headers=headers)
            for partition, group in by_partition.items() for data in bundle(group)]
    await asyncio.gather(*sent)


@app.agent(cache_updates_topic)
async def cache_orders(stream: StreamT[bytes]) -> None:
    """Write stored orders into the cache Table; a warm-up never replaces a newer entry."""
    async for event in stream.events():
        try:
            entries = unbundle(event.value)
        except MalformedBundle as exc:
            # Only the cache misses out: the orders are stored, lookups read PostgreSQL.
            logger.error("Skipping a cache update at %s: %s", where(event), exc)
            continue
        warm_up = WARM_UP_HEADER in dict(event.headers or {})
        await recent_orders.remember(event.message.partition, entries, keep_newer=warm_up)


@app.task
async def warm_up_when_empty() -> None:
    """The Go service's LoadRecent: an empty cache is filled with the newest stored orders."""
    if not recent_orders.enabled or not recent_orders.is_empty():
        return
    logger.info("Cache warm-up: loading up to %d recent orders from PostgreSQL", settings.cache_size)
    try:
        orders = await app.repo.load_recent_versions(settings.cache_size)
    except DatabaseUnavailable as exc:
        logger.warning("Cache warm-up skipped, PostgreSQL unavailable: %s", exc)
        return
    owned = {tp.partition for tp in app.assignor.assigned_actives()
             if tp.topic == cache_updates_topic.get_topic_name()}
    entries = []
    for order, version in orders:  # each worker warms the partitions it owns
        key = order.order_uid.encode()
        partition = partition_of(key)
        if partition in owned:
            entries.append((partition, key, encode_entry(version, encode_order(order))))
    logger.info("Cache warm-up: sending %d orders to the cache", len(entries))
    try:
        await update_cache(entries, warm_up=True)
    except (ProducerSendError, NotReady):
        if not app.should_stop:
            raise
        # Stopping closed the producer under us: the next start warms up again.
        logger.info("Cache warm-up interrupted: the worker is stopping")
        return
    logger.info("Cache warm-up: %d of %d recent orders sent to this worker's partitions",
                len(entries), len(orders))
