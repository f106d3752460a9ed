"""The consumer thread fetches only the partitions Faust asked for, a revoke commits first,
and a seek holds the stream partitions until flow resumes (orderstream/consumer.py).

The lost records themselves, with a real broker: tests/integration/test_consumer_fetch.py;
on real workers: test_scale.py's standby-copies test, which failed so 3 times in 10.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka.consumer.fetcher import Fetcher
from faust.tables import recovery
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode.utils.queues import FlowControlEvent

from orderstream.app import OrderApp
from orderstream.config import Settings
from orderstream.consumer import Consumer, ConsumerThread, KafkaTransport


def test_faust_behaviour_the_consumer_relies_on() -> None:
    """Pins Faust and aiokafka internals: if one fails, re-check orderstream/consumer.py."""
    # Faust passes its live set of unpaused partitions, which a pause empties in place...
    wait = inspect.getsource(faust_consumer.Consumer._wait_next_records)
    assert "active_partitions = self._get_active_partitions()" in wait
    assert "active_partitions=active_partitions" in wait
    pause = inspect.getsource(faust_consumer.Consumer.pause_partitions)
    assert "self._get_active_partitions().difference_update(tpset)" in pause
    # ...to the thread's fetch, which hands it to aiokafka as it is...
    fetch = inspect.getsource(faust_aiokafka.AIOKafkaConsumerThread._fetch_records)
    assert "fetcher.fetched_records(\n                    active_partitions," in fetch
    getmany = inspect.getsource(faust_aiokafka.AIOKafkaConsumerThread.getmany)
    assert "self._fetch_records,\n            _consumer,\n            active_partitions," in getmany
    # ...where an empty set means every partition...
    assert "if partitions and tp not in partitions:" in inspect.getsource(Fetcher.fetched_records)
    # ...and a record of a paused partition is dropped, not kept for later.
    assert "or tp in active_partitions" in inspect.getsource(faust_consumer.Consumer.getmany)
    # The recovery pauses the recovered active partitions, then seeks the standbys and
    # resumes them, a fetch possibly waiting all along.
    restart = inspect.getsource(recovery.Recovery._restart_recovery.fun)
    paused = restart.index("T(consumer.pause_partitions)(active_tps)")
    sought = restart.index("consumer, standby_tps, standby_offsets")
    assert paused < sought < restart.index("T(consumer.resume_partitions)(standby_tps)")
    # The thread the consumer makes, and the transport the app makes.
    assert "return AIOKafkaConsumerThread(self" in inspect.getsource(
        faust_aiokafka.Consumer._new_consumer_thread
    )
    assert "return transport.by_url(self.conf.broker_consumer[0])(" in inspect.getsource(
        faust.App._new_transport
    )


def test_faust_forgets_acked_offsets_on_a_revoke_before_it_commits() -> None:
    """Pins why Consumer.on_partitions_revoked commits first: Faust's revoke drops the acked
    offsets, then hands over to the app, whose wait for the streams ends with the commit."""
    revoked = inspect.getsource(faust_consumer.Consumer.on_partitions_revoked)
    assert revoked.index("self._acked.pop(tp, None)") < revoked.index(
        "await T(self._on_partitions_revoked, partitions=revoked)(revoked)"
    )
    assert "await self.maybe_wait_for_commit_to_finish()" in inspect.getsource(
        faust_consumer.Consumer.commit
    )


async def test_a_revoke_commits_the_acked_offsets_before_faust_drops_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order: list[str] = []

    class Probe(Consumer):
        def __init__(self) -> None:  # no transport: only the revoke's order of steps
            self._acked = {TP("t", 0): [5, 6]}

        async def maybe_wait_for_commit_to_finish(self) -> bool:
            order.append("wait for a commit under way")
            return False

        async def commit(self, *args: Any, **kwargs: Any) -> bool:
            order.append(f"commit {self._acked}")
            return True

    async def faust_revoke(self: Any, revoked: set[TP]) -> None:
        self._acked.clear()
        order.append("faust's revoke")

    monkeypatch.setattr(faust_consumer.Consumer, "on_partitions_revoked", faust_revoke)
    await Probe().on_partitions_revoked({TP("t", 0)})

    assert order == [
        "wait for a commit under way",
        "commit {TP(topic='t', partition=0): [5, 6]}",
        "faust's revoke",
    ]


@pytest.mark.parametrize("fast_path", [True, False])
def test_the_app_consumes_through_the_transport_and_thread_above(
    tmp_path: Path, fast_path: bool
) -> None:
    """With FAUST_FAST_PATH on or off (fastpath.py's consumer is built on this one)."""
    app = OrderApp(Settings(data_dir=tmp_path, faust_fast_path=fast_path))
    assert isinstance(app.transport, KafkaTransport)
    assert issubclass(type(app.transport).Consumer, Consumer)
    assert KafkaTransport.Consumer is Consumer
    assert Consumer._new_consumer_thread is not faust_aiokafka.Consumer._new_consumer_thread


@pytest.fixture
def thread() -> ConsumerThread:
    """The thread's fetch alone: constructing it starts an event loop of its own."""
    return ConsumerThread.__new__(ConsumerThread)


async def test_a_fetch_asks_for_the_partitions_unpaused_when_it_began(
    thread: ConsumerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[Any] = []

    async def call_thread(method: Any, consumer: Any, partitions: Any, **kwargs: Any) -> Any:
        asked.append(partitions)
        return {}

    monkeypatch.setattr(thread, "_ensure_consumer", lambda: SimpleNamespace(_max_poll_records=10))
    monkeypatch.setattr(thread, "call_thread", call_thread)
    active, standby = TP("changelog", 0), TP("changelog", 1)
    live = {active}  # Faust's set, paused in place

    await thread.getmany(live, timeout=1.0)
    live.discard(active)  # paused while the fetch waits: the fetch still asks for it alone
    assert asked == [{active}] and asked[0] is not live

    assert await thread.getmany(live, timeout=1.0) == {}  # nothing asked: nothing fetched
    assert len(asked) == 1

    live.add(standby)
    await thread.getmany(live, timeout=1.0)
    assert asked[1] == {standby}

    await thread.getmany(None, timeout=1.0)  # a client-only app: every partition
    assert asked[2] is None


def test_faust_seeks_the_stream_partitions_before_it_empties_the_queues() -> None:
    """Pins why Consumer.perform_seek holds the stream partitions until resume_flow: at the
    end of a rebalance Faust resumes them, seeks, and only then empties the agents' queues."""
    for ending in (recovery.Recovery.on_recovery_completed, recovery.Recovery._resume_streams):
        source = inspect.getsource(ending)
        steps = ["resume_partitions(", "perform_seek()", "flow_control.resume()", "resume_flow()"]
        at = [source.index(step) for step in steps]
        assert at == sorted(at), ending
    assert "self.clear()" in inspect.getsource(FlowControlEvent.resume)
    # A record is delivered only for a partition in the live active set or buffered...
    getmany = inspect.getsource(faust_consumer.Consumer.getmany)
    assert (
        "or tp in active_partitions\n                    or tp in self._buffered_partitions"
        in getmany
    )
    # ...and a seek resets the read offset the drain loop measures gaps from.
    assert "read_offset.update(" in inspect.getsource(faust_consumer.Consumer.perform_seek)
    assert "active_partitions.add(tp)" in inspect.getsource(faust_consumer.Consumer.on_buffer_drop)


STREAM = TP("orders", 0), TP("orders", 1)
CHANGELOG = TP("group-order-cache-changelog", 0)


class HoldProbe(Consumer):
    """The consumer's partition bookkeeping, with a thread that records seeks."""

    log = SimpleNamespace(dev=lambda *args: None)

    def __init__(self) -> None:  # no transport: only the hold and its release
        self.app = SimpleNamespace(
            topics=SimpleNamespace(acking_topics={"orders"}),
            consumer_generation_id=1,
            in_recovery=False,
        )
        self.sought: list[tuple[TP, int | None]] = []
        self._thread = SimpleNamespace(
            assignment=lambda: {*STREAM, CHANGELOG},
            seek=lambda tp, offset: self.sought.append((tp, offset)),
            earliest_offsets=self._earliest_offsets,
        )
        self._active_partitions = {*STREAM, CHANGELOG}
        self._paused_partitions: set[TP] = set()
        self._buffered_partitions: set[TP] = set()
        self._committed_offset = defaultdict(lambda: None)
        self._read_offset = defaultdict(lambda: None)
        self.held = set()
        self._releasing = None
        self.flow_active = False
        self.can_resume_flow = asyncio.Event()
        self.suspend_flow = asyncio.Event()

    async def _earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: 2 for tp in tps}  # the log starts at 2: older records were deleted


async def test_a_seek_holds_the_stream_partitions_until_flow_resumes_and_seeks_them_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probe = HoldProbe()
    active_while_seeking: list[set[TP]] = []

    async def faust_seek(self: Any) -> None:
        active_while_seeking.append(set(self._active_partitions))
        self._committed_offset[STREAM[0]] = 5  # partition 1 was never committed
        self._read_offset.update({STREAM[0]: 5, STREAM[1]: None})

    monkeypatch.setattr(faust_consumer.Consumer, "perform_seek", faust_seek)
    await probe.perform_seek()
    # From the seek until flow resumes, only the changelog partition fetches and delivers.
    assert active_while_seeking == [{CHANGELOG}]
    assert probe.held == set(STREAM) and probe._active_partitions == {CHANGELOG}
    probe.on_buffer_full(STREAM[0])
    probe.on_buffer_drop(STREAM[0])  # a queue draining does not make it active again
    assert probe._active_partitions == {CHANGELOG} and not probe._buffered_partitions

    # Records they fetched meanwhile were skipped, and what they queued is emptied with
    # the queues: both are read again from the committed offset (or the start).
    probe._committed_offset[STREAM[0]] = 7  # a commit since the seek
    probe._read_offset[STREAM[0]] = 40
    probe.resume_flow()
    assert probe._releasing is not None
    await probe._releasing
    assert sorted(probe.sought) == [(STREAM[0], 7), (STREAM[1], 2)]
    assert probe._read_offset[STREAM[0]] == 7 and probe._read_offset[STREAM[1]] == 2
    assert probe._active_partitions == {*STREAM, CHANGELOG} and not probe.held


async def test_a_held_partition_paused_or_caught_by_a_rebalance_stays_out() -> None:
    probe = HoldProbe()
    probe.hold(set(STREAM))
    probe._paused_partitions.add(STREAM[1])  # paused since: not fetched on release
    probe.resume_flow()
    await probe._releasing
    assert probe._active_partitions == {STREAM[0], CHANGELOG} and not probe.held

    # One revoked since it was held is dropped; the others are released.
    probe.hold({*STREAM, TP("orders", 9)})
    probe._paused_partitions.clear()
    probe.resume_flow()
    await probe._releasing
    assert probe._active_partitions == {*STREAM, CHANGELOG} and not probe.held

    probe.hold(set(STREAM))

    def seek_in_a_new_generation(tp: TP, offset: int) -> None:
        probe.app.consumer_generation_id += 1

    probe._committed_offset.update({STREAM[0]: 3, STREAM[1]: 3})
    probe._thread.seek = seek_in_a_new_generation
    probe.resume_flow()
    await probe._releasing
    assert probe.held == set(STREAM) and probe._active_partitions == {CHANGELOG}

    # The new generation's resume releases them, even with a release still under way.
    slow = asyncio.Event()

    async def earliest_slowly(*tps: TP) -> dict[TP, int]:
        await slow.wait()
        return {}

    probe._thread.seek = lambda tp, offset: None
    probe._committed_offset[STREAM[0]] = None
    probe._thread.earliest_offsets = earliest_slowly
    probe.resume_flow()
    stalled = probe._releasing
    await asyncio.sleep(0)
    probe._committed_offset[STREAM[0]] = 3
    probe.resume_flow()
    await probe._releasing
    assert stalled is not None and stalled.cancelled()
    assert probe._active_partitions == {*STREAM, CHANGELOG} and not probe.held
