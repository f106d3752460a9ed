"""The consumer thread fetches only the partitions Faust asked for (orderstream/consumer.py).

The lost records themselves, with a real broker: tests/integration/test_consumer_fetch.py;
on real workers: test_scale.py's standby-copies test, which failed so 3 times in 10.
"""

from __future__ import annotations

import inspect
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
