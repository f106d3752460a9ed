"""Faust's per-message ceiling raised: batches go from the fetcher to the agent without a task
per message (FAUST_FAST_PATH, README "Performance").

Stock faust-streaming hands each fetched message to its stream through ~4 new tasks:
``Consumer._drain_messages`` awaits ``wait_first(callback(message), suspend_flow.wait())``
(kept upstream for the rebalance deadlock of faust-streaming #229), the conductor takes a
lock and awaits flow control, the stream iterator yields to the loop once per message, and
each ack takes the ack lock twice and calls two sensors. Two classes replace that, only for
what can be done without waiting:

- ``FastConsumer`` puts a fetched message on its one channel's queue inline (decode, make
  the event, ``put_nowait_enhanced`` with the same pressure callbacks). Anything that would
  wait or branch goes Faust's own guarded way, message by message: flow suspended, the
  channel queue full, the producer buffer over its limit, a decoding error, a topic
  partition with other than one subscriber, the conductor rebuilding its indices. Nothing
  inline ever waits, so the #229 deadlock cannot arise from it.
- ``FastStream.noack_take`` drains what is queued in one loop and waits only when the queue
  is empty; ``FastStream.ack`` takes the ack lock once and calls the per-message sensors
  only for a message whose in-sensor ran (Faust's own iterator), so counters stay paired.

Both change together: a faster drain alone only makes the stream's backlog longer. They are
installed through Faust's extension points, the app's transport (its ``Consumer`` class) and
the ``Stream`` setting (``install``). This is the one module that touches the Faust
internals listed in ``RELIED_ON``; tests/unit/test_fastpath.py pins them, so an upgrade
that changes them fails a test rather than production.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, cast

import faust
from faust.exceptions import KeyDecodeError, ValueDecodeError
from faust.streams import _tracks_buffer_agen
from faust.transport.consumer import CONSUMER_FETCHING
from faust.types import TP, AppT, ChannelT, EventT, Message
from faust.types.tuples import ack_lock
from mode import Service, ServiceT
from mode.utils.times import Seconds, want_seconds

from . import consumer

logger = logging.getLogger(__name__)

# The Faust internals this module reads or overrides, as (owner, attribute); pinned by
# tests/unit/test_fastpath.py.
RELIED_ON = (
    ("faust.transport.consumer:Consumer", "_drain_messages"),
    ("faust.transport.consumer:Consumer", "_read_offset"),
    ("faust.transport.consumer:Consumer", "_commit_every"),
    ("faust.transport.consumer:Consumer", "_n_acked"),
    ("faust.transport.consumer:Consumer", "_add_gap"),
    ("faust.transport.conductor:Conductor", "_tp_index"),
    ("faust.transport.conductor:Conductor", "_tp_to_callback"),
    ("faust.transport.conductor:Conductor", "_tp_to_callback_lock"),
    ("faust.streams", "_tracks_buffer_agen"),
)

# Messages handled between two yields to the event loop, as Faust's own drain loop does.
YIELD_EVERY = 100


class FastConsumer(consumer.Consumer):
    """The aiokafka consumer whose drain loop delivers a fetched message inline when it can."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per topic partition, the queue pressure callbacks: one object each, as the
        # queue remembers pending pressure-drop callbacks by identity.
        self._pressure: dict[TP, tuple[Callable[[], None], Callable[[], None]]] = {}
        # Messages delivered inline and by Faust's guarded path, since start.
        self.delivered_inline = 0
        self.delivered_guarded = 0

    def _pressure_callbacks(self, tp: TP) -> tuple[Callable[[], None], Callable[[], None]]:
        """on_pressure_high/on_pressure_drop for ``tp``, as the conductor's handler has them:
        a queue under pressure stops fetching from ``tp`` until it has drained."""
        callbacks = self._pressure.get(tp)
        if callbacks is None:
            on_topic_buffer_full = self.app.sensors.on_topic_buffer_full
            # Faust's own TP: the fetcher's is aiokafka's, which the consumer's partition
            # sets refuse.
            faust_tp = TP(tp.topic, tp.partition)

            def on_pressure_high() -> None:
                on_topic_buffer_full(faust_tp)
                self.on_buffer_full(faust_tp)

            def on_pressure_drop() -> None:
                self.on_buffer_drop(faust_tp)

            callbacks = self._pressure[tp] = (on_pressure_high, on_pressure_drop)
        return callbacks

    async def deliver_inline(self, tp: TP, message: Message) -> bool:
        """Put ``message`` on its channel's queue now, if nothing would make Faust wait or
        branch; False leaves it to Faust's guarded path (the conductor's handler)."""
        app = self.app
        if not (self.flow_active and app.flow_control.is_active()):
            return False
        conductor: Any = app.topics
        if conductor._tp_to_callback_lock.locked() or tp not in conductor._tp_to_callback:
            return False  # the conductor is rebuilding its indices, or has no handler
        channels = conductor._tp_index.get(tp)
        if not channels or len(channels) != 1:
            return False  # several subscribers: Faust decodes once per key/value type
        buffer = app.producer.buffer
        if buffer.size > buffer.max_messages:
            return False  # Faust waits for the producer buffer to ebb
        (channel,) = channels
        queue = channel.queue
        if queue.full():
            return False  # Faust waits for room
        try:
            event = await channel.decode(message, propagate=True)
        except (KeyDecodeError, ValueDecodeError):
            return False  # Faust's handler decodes again, acks and raises it in the stream
        message.incref(1)
        on_pressure_high, on_pressure_drop = self._pressure_callbacks(tp)
        queue.put_nowait_enhanced(
            event, on_pressure_high=on_pressure_high, on_pressure_drop=on_pressure_drop
        )
        return True

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover
        """Faust's drain loop (transport/consumer.py) with deliver_inline before its
        per-message ``wait_first``: read offsets, gaps, commit_every, the generation checks
        of getmany and the stop/cancel handling are Faust's."""
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        read_offset = self._read_offset
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        deliver_inline = self.deliver_inline
        since_yield = 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        since_yield += 1
                        if since_yield > YIELD_EVERY:
                            await asyncio.sleep(0)
                            since_yield = 0
                        offset = message.offset
                        r_offset = read_offset[tp]
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            if await deliver_inline(tp, message):
                                self.delivered_inline += 1
                            else:
                                self.delivered_guarded += 1
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            read_offset[tp] = offset
                        else:
                            self.log.dev("DROPPED MESSAGE ROFF %r", offset)
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


class FastTransport(consumer.KafkaTransport):
    """The service's aiokafka transport (consumer.py: a fetch asks only for the partitions
    unpaused when it begins) with FastConsumer."""

    Consumer = FastConsumer


def ack_message(message: Message, consumer: Any) -> bool:
    """Message.ack without its nested lock: one reference released; True when it was the
    last, and the offset is now safe to commit (Consumer.ack's bookkeeping)."""
    with ack_lock:
        if message.acked:
            return False
        refcount = message.refcount - 1
        if refcount > 0:
            message.refcount = refcount
            return False
        message.refcount = 0
        return message.on_final_ack(consumer)


class FastStream(faust.Stream):
    """A Stream whose noack_take drains the queue in one loop and whose ack is lean."""

    async def ack(self, event: EventT) -> bool:
        """Ack ``event``; the per-message sensors run only if its in-sensor ran (Faust's own
        iterator), so a sensor's in/out counts stay paired."""
        message = event.message
        last = ack_message(message, self.app.consumer)
        if message.time_in is not None:
            tp, offset = message.tp, message.offset
            self._on_stream_event_out(tp, offset, self, event)
            if last:
                self._on_message_out(tp, offset, message)
        return last

    def _fast_take_supported(self) -> bool:
        """A channel's queue to read, nothing that transforms values (processors, joins)."""
        return (
            isinstance(self.channel, ChannelT)
            and not self._processors
            and self.join_strategy is None
            and not self.combined
        )

    @_tracks_buffer_agen
    async def noack_take(self, max_: int, within: Seconds) -> AsyncGenerator[Sequence[Any], None]:
        """Faust's noack_take (batches of at most ``max_`` events, yielded when full or
        ``within`` seconds after the last one; acked by the caller), reading the channel's
        queue directly: what is queued is taken in one loop, the loop waits only when the
        queue is empty. As Faust's iterator: queued errors are raised, events of a past
        rebalance generation (or taken while flow is suspended) are skipped, though not
        acked as Faust's are (see _take), events are tracked as unacked, and taking from the
        queue resumes a partition whose fetching stopped under pressure."""
        if not self._fast_take_supported():
            async for batch in super().noack_take(max_, within):
                yield batch
            return
        app = self.app
        channel = cast(ChannelT, self.channel)
        queue = channel.queue
        flow_control = app.flow_control
        acking_topics = app.topics.acking_topics
        monitor = app.monitor
        inbound_time = getattr(monitor, "stream_inbound_time", None)
        timeout = want_seconds(within) if within else None
        loop = asyncio.get_running_loop()
        started_by_take = await self.maybe_start()
        buffer: list[EventT] = []
        deadline = loop.time() + timeout if timeout is not None else None
        ended = False  # the actor was cancelled: Faust throws StopAsyncIteration in
        error: Exception | None = None  # queued by the conductor: raised after the buffer
        try:
            while not self.should_stop:
                # Take every event already queued, up to a full batch.
                if error is None and not ended and not queue.empty():
                    unacked = app.consumer.unacked
                    generation = app.consumer_generation_id
                    active = flow_control.is_active()
                    try:
                        while len(buffer) < max_ and not queue.empty():
                            event = queue.get_nowait()  # raises errors queued by the conductor
                            self._take(event, buffer, active, generation, acking_topics, unacked)
                    except StopAsyncIteration:
                        ended = True
                    except Exception as exc:
                        error = exc
                now = loop.time()
                window_over = deadline is not None and now >= deadline
                if buffer and (ended or error or len(buffer) >= max_ or window_over):
                    batch, buffer = buffer, []
                    self.events_total += len(batch)
                    if inbound_time is not None:  # the livelock detector's "stream is moving"
                        for tp in {event.message.tp for event in batch}:
                            inbound_time[tp] = now
                    yield batch  # taken events are tracked: handed on, even when ending
                    deadline = loop.time() + timeout if timeout is not None else None
                    continue
                if error is not None:
                    raise error
                if ended:
                    break
                if window_over:
                    deadline = now + cast(float, timeout)
                # Nothing queued: wait for the next event (or the end of the batch window).
                try:
                    if deadline is None:
                        event = await queue.get()
                    else:
                        event = await asyncio.wait_for(queue.get(), deadline - now)
                except TimeoutError:
                    continue
                except StopAsyncIteration:
                    ended = True
                    continue
                except Exception as exc:
                    error = exc
                    continue
                self._take(
                    event,
                    buffer,
                    flow_control.is_active(),
                    app.consumer_generation_id,
                    acking_topics,
                    app.consumer.unacked,
                )
        finally:
            on_stop_iteration = getattr(channel, "on_stop_iteration", None)
            if on_stop_iteration is not None:
                on_stop_iteration()
            if started_by_take:
                await self.stop()
                self.service_reset()

    def _take(
        self,
        event: Any,
        buffer: list[EventT],
        flow_active: bool,
        generation: int,
        acking_topics: set[str],
        unacked: Any,
    ) -> None:
        """Add a queued event to ``buffer``, as Faust's stream iterator prepares one."""
        if not isinstance(event, EventT):
            raise RuntimeError("Take buffer found current_event is None")
        message = event.message
        if not flow_active or message.generation_id != generation:
            # Fetched before the current rebalance, or taken while one is under way: skipped
            # and NOT acked. Faust's iterator acks it, and the revoke's commit then covers an
            # offset nothing stored (test_scale lost one order that way). Unacked, it is read
            # again: the rebalance ends with a seek to the committed offsets.
            return
        if message.topic in acking_topics and not message.tracked:
            message.tracked = True
            unacked.add(message)
        buffer.append(event)


def install(app: AppT) -> None:
    """Make ``app`` use FastStream and FastTransport; before its agents and consumer exist."""
    app.conf.Stream = FastStream  # type: ignore[assignment]  # a Param descriptor
    app.transport = FastTransport(app.conf.broker_consumer, app)
