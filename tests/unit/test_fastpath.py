"""orderstream/fastpath.py without Kafka: the Faust internals it relies on, when it delivers
inline and when it leaves a message to Faust, and how its noack_take and ack behave.

The app is built but never started: the conductor is given an assignment by hand, and
messages are made as the fetcher makes them (Consumer._to_message's ConsumerMessage).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.exceptions import ValueDecodeError
from faust.types import TP
from faust.types.tuples import ConsumerMessage
from mode.utils.imports import symbol_by_name

from orderstream import fastpath
from orderstream.app import create_app
from orderstream.config import Settings

TOPIC = "fastpath-unit"
TP0 = TP(TOPIC, 0)

# Faust's code that fastpath.py copies or mirrors, as installed (faust-streaming 0.15.3).
# A change fails here: read the new code and port it to fastpath.py before updating these.
MIRRORED = {
    "faust.transport.consumer:Consumer._drain_messages": "44a2500309e83c63",
    "faust.transport.consumer:Consumer.getmany": "4b168d84882a70d6",
    "faust.transport.consumer:Consumer.ack": "5fcf41cf45153475",
    "faust.streams:Stream.noack_take": "f2cc2dbfc162d200",
    "faust.transport.conductor:ConductorCompiler.build": "837cf521368c1ee4",
}


def source_digest(path: str) -> str:
    module, _, qualname = path.partition(":")
    owner, _, name = qualname.partition(".")
    function = getattr(symbol_by_name(f"{module}:{owner}"), name)
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]


@pytest.mark.parametrize("path", sorted(MIRRORED))
def test_the_faust_code_mirrored_is_unchanged(path: str) -> None:
    assert source_digest(path) == MIRRORED[path]


class Item(faust.Record, serializer="json"):
    value: int


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[faust.App]:
    app = faust.App(
        "fastpath-unit",
        broker="kafka://127.0.0.1:1",  # never connected
        key_serializer="raw",
        value_serializer="raw",
        store="memory://",
        web_enabled=False,
        datadir=str(tmp_path),
    )
    fastpath.install(app)
    app.flow_control.resume()  # a started worker's state between rebalances
    yield app
    consumer: Any = app.consumer
    consumer._thread.thread_loop.close()  # made with the consumer; its thread never ran


async def subscribe(app: faust.App, value_type: Any = bytes, maxsize: int | None = None) -> Any:
    """A stream's channel on TOPIC, registered with the conductor, which is assigned TP0."""
    if maxsize is not None:
        app.conf.stream_buffer_maxsize = maxsize  # each channel's queue size
    topic = app.topic(TOPIC, key_type=bytes, value_type=value_type)
    channel = topic.__aiter__()
    conductor: Any = app.topics
    await conductor._update_indices()  # what its subscriber task does on start
    await conductor.on_partitions_assigned({TP0})
    return channel


def message(offset: int, value: bytes = b"v", generation: int = 0) -> ConsumerMessage:
    return ConsumerMessage(
        TOPIC, 0, offset, 0.0, 0, None, b"k", value, None, 1, len(value), TP0,
        generation_id=generation,
    )  # fmt: skip


def test_the_private_faust_attributes_relied_on_exist(app: faust.App) -> None:
    instances = {
        "faust.transport.consumer:Consumer": app.consumer,
        "faust.transport.conductor:Conductor": app.topics,
    }
    for owner, attribute in fastpath.RELIED_ON:
        where = instances.get(owner, symbol_by_name(owner))
        assert hasattr(where, attribute), (owner, attribute)


def test_the_overrides_keep_faust_signatures() -> None:
    from faust.transport.consumer import Consumer

    pairs = [
        (Consumer._drain_messages, fastpath.FastConsumer._drain_messages),
        (faust.Stream.noack_take, fastpath.FastStream.noack_take),
        (faust.Stream.ack, fastpath.FastStream.ack),
    ]
    for faust_method, ours in pairs:
        assert list(inspect.signature(ours).parameters) == list(
            inspect.signature(faust_method).parameters
        )


def test_fast_path_setting_picks_the_classes(tmp_path: Path) -> None:
    on = create_app(Settings(data_dir=tmp_path, kafka_group_id="fp-on", faust_fast_path=True))
    off = create_app(Settings(data_dir=tmp_path, kafka_group_id="fp-off", faust_fast_path=False))

    assert type(on.transport).Consumer is fastpath.FastConsumer
    assert on.conf.Stream is fastpath.FastStream
    assert not issubclass(type(off.transport).Consumer, fastpath.FastConsumer)
    assert off.conf.Stream is faust.Stream


async def test_a_message_goes_inline_onto_its_channel_queue(app: faust.App) -> None:
    channel = await subscribe(app)
    consumer: Any = app.consumer
    m = message(0)

    assert await consumer.deliver_inline(TP0, m)
    event = channel.queue.get_nowait()
    assert (event.message, event.value, m.refcount) == (m, b"v", 1)


async def test_suspended_flow_leaves_the_message_to_faust(app: faust.App) -> None:
    channel = await subscribe(app)
    consumer: Any = app.consumer
    consumer.stop_flow()
    assert not await consumer.deliver_inline(TP0, message(0))
    consumer.resume_flow()
    app.flow_control.suspend()
    assert not await consumer.deliver_inline(TP0, message(1))
    assert channel.queue.empty()


async def test_a_full_queue_leaves_the_message_to_faust(app: faust.App) -> None:
    channel = await subscribe(app, maxsize=2)
    consumer: Any = app.consumer
    assert await consumer.deliver_inline(TP0, message(0))
    assert await consumer.deliver_inline(TP0, message(1))
    m = message(2)

    assert not await consumer.deliver_inline(TP0, m)
    assert (channel.queue.qsize(), m.refcount) == (2, 0)


async def test_a_producer_buffer_over_its_limit_leaves_the_message_to_faust(
    app: faust.App,
) -> None:
    await subscribe(app)
    consumer: Any = app.consumer
    buffer = app.producer.buffer
    for _ in range(buffer.max_messages + 1):
        buffer.pending.put_nowait(None)

    assert not await consumer.deliver_inline(TP0, message(0))


async def test_undecodable_bytes_leave_the_message_to_faust(app: faust.App) -> None:
    channel = await subscribe(app, value_type=Item)
    consumer: Any = app.consumer
    good, bad = message(0, b'{"value": 1}'), message(1, b"not json")

    assert await consumer.deliver_inline(TP0, good)
    assert not await consumer.deliver_inline(TP0, bad)
    assert (channel.queue.qsize(), bad.refcount) == (1, 0)


async def test_two_subscribers_leave_the_message_to_faust(app: faust.App) -> None:
    first = await subscribe(app)
    second = await subscribe(app)
    consumer: Any = app.consumer

    assert not await consumer.deliver_inline(TP0, message(0))
    assert first.queue.empty() and second.queue.empty()


async def test_a_conductor_rebuilding_its_indices_leaves_the_message_to_faust(
    app: faust.App,
) -> None:
    await subscribe(app)
    consumer: Any = app.consumer
    conductor: Any = app.topics
    async with conductor._tp_to_callback_lock:
        assert not await consumer.deliver_inline(TP0, message(0))


async def test_pressure_stops_and_resumes_fetching_the_partition(app: faust.App) -> None:
    channel = await subscribe(app, maxsize=10)
    consumer: Any = app.consumer
    consumer._set_active_tps({TP0})
    for offset in range(9):  # pressure is high from 10 / 1.25 = 8 queued
        assert await consumer.deliver_inline(TP0, message(offset))
    assert TP0 not in consumer._get_active_partitions()

    stream = app.stream(channel)
    async for batch in stream.noack_take(9, within=0.05):
        assert len(batch) == 9
        break
    assert TP0 in consumer._get_active_partitions()  # the queue drained: fetching resumes


async def fill(app: faust.App, channel: Any, offsets: range, generation: int = 0) -> list[Any]:
    consumer: Any = app.consumer
    messages = [message(offset, generation=generation) for offset in offsets]
    for m in messages:
        assert await consumer.deliver_inline(TP0, m)
    return messages


async def test_noack_take_yields_queued_events_in_batches_in_order(app: faust.App) -> None:
    channel = await subscribe(app)
    messages = await fill(app, channel, range(7))
    stream = app.stream(channel)
    batches = []
    async for batch in stream.noack_take(3, within=0.05):
        batches.append([event.message.offset for event in batch])
        if sum(map(len, batches)) == 7:
            break

    assert batches == [[0, 1, 2], [3, 4, 5], [6]]
    assert set(app.consumer.unacked) == set(messages)  # tracked, not acked


async def test_noack_take_skips_events_of_a_past_generation_without_acking_them(
    app: faust.App,
) -> None:
    channel = await subscribe(app)
    stale = await fill(app, channel, range(2), generation=0)
    app.consumer_generation_id = 1
    await fill(app, channel, range(2, 4), generation=1)
    stream = app.stream(channel)
    async for batch in stream.noack_take(10, within=0.05):
        assert [event.message.offset for event in batch] == [2, 3]
        break

    # Not acked: acked, their offsets would be committed though nothing processed them.
    consumer: Any = app.consumer
    assert not any(m.acked for m in stale)
    assert consumer._acked[TP0] == []


async def test_an_event_taken_as_a_rebalance_begins_is_neither_handed_on_nor_committed(
    app: faust.App,
) -> None:
    """The race test_scale met: the stream waits on an empty queue, a message is delivered
    (waking it), and a rebalance suspends flow before the stream runs. The event must not be
    handed on, and must not become safe to commit: the revoke's commit would skip it."""
    channel = await subscribe(app)
    stream = app.stream(channel)
    consumer: Any = app.consumer
    batches: list[list[int]] = []

    async def take() -> None:
        async for batch in stream.noack_take(10, within=0.05):
            batches.append([event.message.offset for event in batch])

    taking = asyncio.ensure_future(take())
    await asyncio.sleep(0.01)  # waiting on the empty queue
    (raced,) = await fill(app, channel, range(5, 6))
    app.flow_control.suspend()  # the revoke, before the woken stream runs
    await asyncio.sleep(0.1)

    assert batches == []
    assert not raced.acked and raced not in consumer.unacked
    assert consumer._new_offset(TP0) is None  # nothing to commit

    # After the rebalance the partition is read again from its committed offset.
    app.flow_control.resume()
    app.consumer_generation_id += 1
    await fill(app, channel, range(5, 6), generation=app.consumer_generation_id)
    await asyncio.sleep(0.1)
    taking.cancel()
    assert batches == [[5]]


async def test_noack_take_hands_on_its_buffer_then_raises_a_queued_error(
    app: faust.App,
) -> None:
    channel = await subscribe(app)
    await fill(app, channel, range(3))
    # Thrown while the three are in its buffer, as the conductor throws a decoding error.
    asyncio.get_running_loop().call_later(0.05, channel.queue._throw, ValueDecodeError("bad"))
    stream = app.stream(channel)
    taken = []
    with pytest.raises(ValueDecodeError):
        async for batch in stream.noack_take(10, within=5):
            taken.extend(event.message.offset for event in batch)

    assert taken == [0, 1, 2]


async def test_noack_take_ends_when_the_actor_is_cancelled(app: faust.App) -> None:
    channel = await subscribe(app)
    await fill(app, channel, range(2))
    # As Faust's Actor.cancel does, while the two are in its buffer.
    asyncio.get_running_loop().call_later(0.05, channel.queue._throw, StopAsyncIteration())
    stream = app.stream(channel)
    batches = [batch async for batch in stream.noack_take(10, within=5)]

    assert [[event.message.offset for event in batch] for batch in batches] == [[0, 1]]


async def test_noack_take_waits_for_the_next_event(app: faust.App) -> None:
    channel = await subscribe(app)
    stream = app.stream(channel)

    async def later() -> None:
        await asyncio.sleep(0.05)
        await fill(app, channel, range(1))

    task = asyncio.ensure_future(later())
    async for batch in stream.noack_take(10, within=0.2):
        assert [event.message.offset for event in batch] == [0]
        break
    await task


async def test_ack_marks_the_offset_safe_to_commit(app: faust.App) -> None:
    channel = await subscribe(app)
    (m,) = await fill(app, channel, range(1))
    stream = app.stream(channel)
    async for (event,) in stream.noack_take(1, within=0.05):
        assert await stream.ack(event)
        assert not await stream.ack(event)  # once only
        break

    consumer: Any = app.consumer
    assert m.acked and m not in consumer.unacked
    assert consumer._acked[TP0] == [0]
