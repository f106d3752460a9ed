"""Standby reads (cache/standby.py): the Faust behaviour they rely on, the shared end-offset
rounds and the setting. The reads themselves, on real workers, are in
tests/integration/test_scale.py."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.consumer.fetcher import Fetcher
from faust.events import Event
from faust.stores.rocksdb import Store as RocksDBStore
from faust.tables import recovery
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message

from orderstream.cache.standby import EndOffsets
from orderstream.cache.store import CacheStore, standby_partitions, store_url, table_options
from orderstream.config import ConfigError, Settings
from orderstream.tables import standby_buffer_size


@pytest.fixture
def app_and_table(tmp_path: Path) -> Iterator[tuple[faust.App, Any]]:
    settings = Settings(kafka_partitions=2)
    app = faust.App("standby-pin", datadir=str(tmp_path), store=store_url(settings))
    table = app.Table(
        "order-cache",
        key_type=bytes,
        value_type=bytes,
        partitions=2,
        options=table_options(settings),
        standby_buffer_size=standby_buffer_size(settings.standby_read_max_lag),
    )
    yield app, table
    for db in table.data._dbs.values():
        db.close()


def changelog_event(app: faust.App, tp: TP, offset: int, key: bytes, value: bytes) -> Event:
    message = Message(
        tp.topic, tp.partition, offset, 0.0, 0, None, key, value, None, key, value, tp=tp
    )
    return Event(app, key, value, {}, message)


def test_a_standby_batch_is_applied_with_its_offset_and_read_back(
    app_and_table: tuple[faust.App, Any],
) -> None:
    """Faust's standby recovery applies a batch through the store's apply_changelog_batch."""
    app, table = app_and_table
    store: CacheStore = table.data
    tp = TP(table.changelog_topic.get_topic_name(), 1)
    assert store.applied_offset(1) is None  # a partition not open stays closed
    assert 1 not in store._dbs

    store.apply_changelog_batch(
        [changelog_event(app, tp, 4, b"a", b"1"), changelog_event(app, tp, 5, b"a", b"2")],
        to_key=lambda k: k,
        to_value=lambda v: v,
    )

    assert store.applied_offset(1) == 5
    assert store.get_in(1, b"a") == b"2"
    assert store.applied_offset(0) is None


def test_faust_behaviour_standby_reads_rely_on(app_and_table: tuple[faust.App, Any]) -> None:
    """Pins Faust internals: if one of these fails, re-check cache/store.py and standby.py."""
    app, table = app_and_table
    # A standby batch's changes are written before its offset (read first, it never claims
    # more than the data holds).
    source = inspect.getsource(RocksDBStore.apply_changelog_batch)
    assert source.index(".write(batch)") < source.index("self.set_persisted_offset(tp, offset)")
    # Standby events wait in a buffer of the table's standby_buffer_size before being applied.
    slurp = inspect.getsource(recovery.Recovery._slurp_changelogs.fun)
    assert "bufsize = buffer_sizes[tp] = table.standby_buffer_size" in slurp
    assert "if len(buf) >= bufsize" in slurp
    assert table.standby_buffer_size == 1  # STANDBY_READ_MAX_LAG=0: applied one by one
    # The recovery service keeps this worker's standby partitions in one set, in place.
    tp = TP(table.changelog_topic.get_topic_name(), 0)
    standbys = standby_partitions(app)
    app.tables.recovery.add_standby(table, tp)
    assert standby_partitions(app) is standbys and tp in standbys
    assert "self.standby_tps.clear()" in inspect.getsource(recovery.Recovery.on_rebalance)
    # The consumer's highwater is aiokafka's end as of its last fetch (a lower bound), and
    # asserts the partition is assigned (during a rebalance a standby may not be yet).
    thread = faust_aiokafka.AIOKafkaConsumerThread
    assert "self._ensure_consumer().highwater(tp)" in inspect.getsource(thread.highwater)
    assert "assert self._subscription.is_assigned(partition)" in inspect.getsource(
        AIOKafkaConsumer.highwater
    )
    # end_offsets sends ListOffsets as aiokafka's own fetcher does (replica -1, isolation
    # level, topics) and reads the offset after the timestamp from v1 on.
    fetcher = inspect.getsource(Fetcher._proc_offset_request)
    assert "OffsetRequest(-1, self._isolation_level, list(topic_data.items()))" in fetcher
    assert "timestamp, offset = partition_info" in fetcher


def test_buffer_follows_the_bound() -> None:
    assert standby_buffer_size(None) is None  # Faust's default, 1,000
    assert standby_buffer_size(0) == 1
    assert standby_buffer_size(99) == 100


def test_setting() -> None:
    assert Settings().standby_read_max_lag == 0
    assert Settings.from_env({"STANDBY_READ_MAX_LAG": "off"}).standby_read_max_lag is None
    assert Settings.from_env({"STANDBY_READ_MAX_LAG": "250"}).standby_read_max_lag == 250
    for raw in ("-1", "x", "1.5"):
        with pytest.raises(ConfigError) as caught:
            Settings.from_env({"STANDBY_READ_MAX_LAG": raw})
        assert str(caught.value) == (
            f"Config 'STANDBY_READ_MAX_LAG' has value {raw!r}. "
            "Use a whole number of messages, 0 or more, or off."
        )


async def test_each_caller_shares_a_round_sent_after_it_asked() -> None:
    tp, other = TP("changelog", 0), TP("changelog", 1)
    sent: list[set[TP]] = []
    release = asyncio.Event()
    end = 10

    async def fetch(tps: set[TP]) -> dict[TP, int | None]:
        sent.append(set(tps))
        answer = {t: end for t in tps}
        await release.wait()
        return answer

    ends = EndOffsets(fetch)
    first = asyncio.create_task(ends.after_now(tp))
    for _ in range(10):  # the first round is sent
        await asyncio.sleep(0)
    assert sent == [{tp}]
    end = 20  # written after the first round was sent: callers from now on must see it
    later = [asyncio.create_task(ends.after_now(t)) for t in (tp, other, tp)]
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(sent) == 1  # they wait for the next round, not the one in flight
    release.set()
    assert await first == 10
    assert await asyncio.gather(*later) == [20, 20, 20]
    assert sent == [{tp}, {tp, other}]  # one round for all three


async def test_a_failed_or_slow_round_answers_nothing() -> None:
    async def broken(tps: set[TP]) -> dict[TP, int | None]:
        raise RuntimeError("no broker")

    async def slow(tps: set[TP]) -> dict[TP, int | None]:
        await asyncio.sleep(5)
        return {}

    tp = TP("changelog", 0)
    assert await EndOffsets(broken).after_now(tp) is None
    assert await EndOffsets(slow, timeout=0.05).after_now(tp) is None
