"""orderstream/fastpath.py on real Kafka: what a Faust app with the fast path delivers.

Workers of tests/integration/fastpath_app.py (real `faust worker` processes) record every
event they take and every ack; the tests check delivery (every message once, in order per
partition), committed offsets, and that each fall-back to Faust's guarded path keeps that:
a rebalance mid-stream, a full queue, two subscribers, undecodable bytes and a shutdown in
the middle of a batch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from harness import REPO_ROOT, eventually

PARTITIONS = 4


@dataclass
class FastpathWorker:
    """One process of tests/integration/fastpath_app.py."""

    name: str
    out: Path
    process: subprocess.Popen[bytes]

    def lines(self, suffix: str) -> list[str]:
        path = self.out / f"{self.name}.{suffix}"
        return path.read_text().splitlines() if path.exists() else []

    def seen(self, agent: str = "first") -> list[tuple[int, int]]:
        """(partition, offset) of each event this worker's ``agent`` took, in order."""
        pairs = [line.split() for line in self.lines("seen")]
        return [(int(p), int(o)) for a, p, o in pairs if a == agent]

    def acked(self) -> list[tuple[int, int]]:
        return [(int(p), int(o)) for p, o in (line.split() for line in self.lines("acked"))]

    def stats(self) -> dict[str, int]:
        path = self.out / f"{self.name}.stats"
        return dict(json.loads(path.read_text())) if path.exists() else {}

    def log(self) -> str:
        return (self.out / f"{self.name}.log").read_text(errors="replace")[-4000:]

    def alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(
                f"{self.name} exited with {self.process.returncode}:\n{self.log()}"
            )

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout)
        return self.process.returncode


class Scene:
    """A topic and a consumer group of one test, its producer and its workers."""

    def __init__(self, brokers: str, name: str, tmp_path: Path) -> None:
        self.brokers = brokers
        self.topic = f"fastpath-{name}"
        self.group = f"fastpath-group-{name}"
        self.tmp = tmp_path
        self.workers: list[FastpathWorker] = []
        self.produced: dict[int, int] = Counter()  # messages per partition

    async def create_topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.brokers)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(self.topic, PARTITIONS, 1)])
        finally:
            await admin.close()

    async def produce(self, values: list[bytes]) -> None:
        """``values`` round-robin over the partitions, each partition's in the list's order."""
        producer = AIOKafkaProducer(bootstrap_servers=self.brokers, acks="all", linger_ms=5)
        await producer.start()
        try:
            sent = []
            for index, value in enumerate(values):
                partition = index % PARTITIONS
                sent.append(await producer.send(self.topic, value, partition=partition))
                self.produced[partition] += 1
            for future in sent:
                await future
        finally:
            await producer.stop()

    def start(self, name: str, *, fast: bool = True, **env: str) -> FastpathWorker:
        out = self.tmp / "out"
        out.mkdir(exist_ok=True)
        settings = {
            "KAFKA_BROKERS": self.brokers,
            "FP_TOPIC": self.topic,
            "FP_GROUP": self.group,
            "FP_OUT": str(out),
            "FP_NAME": name,
            "FP_DATA_DIR": str(self.tmp / f"data-{name}"),
            "FP_FAST": "1" if fast else "0",
            **env,
        }
        with (out / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "faust",
                    "-A",
                    "tests.integration.fastpath_app",
                    "worker",
                    "-l",
                    "info",
                    "--without-web",
                ],
                env={**os.environ, **settings},
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        worker = FastpathWorker(name, out, process)
        self.workers.append(worker)
        return worker

    def expected(self) -> set[tuple[int, int]]:
        return {(p, o) for p, n in self.produced.items() for o in range(n)}

    async def committed(self) -> dict[int, int]:
        """The group's committed offset per partition (absent: none yet)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.brokers)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(self.group)
        finally:
            await admin.close()
        return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    async def wait_seen(self, count: int, *, agent: str = "first", timeout: float = 90) -> None:
        async def enough() -> int | None:
            for worker in self.workers:
                if worker.process.poll() is None:
                    continue
                if worker.process.returncode not in (0, -signal.SIGTERM):
                    worker.alive()
            total = sum(len(worker.seen(agent)) for worker in self.workers)
            return total if total >= count else None

        await eventually(enough, timeout=timeout, interval=0.2, what=f"{count} events taken")

    async def wait_committed_to_end(self, timeout: float = 60) -> None:
        async def at_end() -> dict[int, int] | None:
            committed = await self.committed()
            return committed if committed == dict(self.produced) else None

        await eventually(at_end, timeout=timeout, interval=0.3, what="offsets committed to end")


@pytest.fixture
async def scene(kafka_brokers: str, unique_name: str, tmp_path: Path) -> AsyncIterator[Scene]:
    s = Scene(kafka_brokers, unique_name, tmp_path)
    await s.create_topic()
    yield s
    for worker in s.workers:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_brokers)
    await admin.start()
    try:
        await admin.delete_topics([s.topic])
    finally:
        await admin.close()


def assert_once_in_order(seen: list[tuple[int, int]], expected: set[tuple[int, int]]) -> None:
    """Every expected (partition, offset) exactly once, each partition's in offset order."""
    twice = [pair for pair, n in Counter(seen).items() if n > 1]
    assert twice == []
    assert set(seen) == expected
    by_partition: dict[int, list[int]] = defaultdict(list)
    for partition, offset in seen:
        by_partition[partition].append(offset)
    for offsets in by_partition.values():
        assert offsets == sorted(offsets)


def values(n: int) -> list[bytes]:
    return [f"message-{i}".encode() for i in range(n)]


async def test_every_message_once_in_order_and_offsets_committed(scene: Scene) -> None:
    await scene.produce(values(4000))
    worker = scene.start("only")
    await scene.wait_seen(4000)
    await scene.wait_committed_to_end()

    assert_once_in_order(worker.seen(), scene.expected())
    stats = worker.stats()
    assert stats["inline"] > stats["guarded"]  # the fast path did the delivering
    assert worker.stop() == 0


async def test_stock_faust_when_the_fast_path_is_off(scene: Scene) -> None:
    await scene.produce(values(400))
    worker = scene.start("stock", fast=False)
    await scene.wait_seen(400)
    await scene.wait_committed_to_end()

    assert_once_in_order(worker.seen(), scene.expected())
    assert worker.stats() == {"inline": None, "guarded": None}  # Faust's own consumer
    assert worker.stop() == 0


async def test_a_full_queue_of_a_slow_agent_falls_back_and_loses_nothing(scene: Scene) -> None:
    # Batches of 10 at 20 ms each: the fetcher outruns the agent, the channel's queue
    # (50 events) fills and messages wait on Faust's guarded path.
    await scene.produce(values(2000))
    worker = scene.start("slow", FP_DELAY="0.02", FP_BATCH="10", FP_BUFFER="50")
    await scene.wait_seen(2000, timeout=120)
    await scene.wait_committed_to_end()

    assert_once_in_order(worker.seen(), scene.expected())
    assert worker.stats()["guarded"] > 0
    assert worker.stop() == 0


async def test_two_subscribers_each_get_every_message_once(scene: Scene) -> None:
    await scene.produce(values(1000))
    worker = scene.start("two", FP_MODE="two")
    await scene.wait_seen(1000, agent="first")
    await scene.wait_seen(1000, agent="second")
    await scene.wait_committed_to_end()

    assert_once_in_order(worker.seen("first"), scene.expected())
    assert_once_in_order(worker.seen("second"), scene.expected())
    assert worker.stats()["inline"] == 0  # two subscribers: Faust's path for each message
    assert worker.stop() == 0


async def test_undecodable_bytes_reach_the_agent_and_the_rest_are_delivered(
    scene: Scene,
) -> None:
    good = [json.dumps({"value": i}).encode() for i in range(400)]
    await scene.produce([*good[:200], b"not json", *good[200:]])
    worker = scene.start("json", FP_MODE="json")
    await scene.wait_seen(400)
    await scene.wait_committed_to_end()  # the bad message is acked too

    bad = (200 % PARTITIONS, 200 // PARTITIONS)
    assert_once_in_order(worker.seen(), scene.expected() - {bad})
    assert worker.lines("errors") == ["ValueDecodeError"]
    assert worker.stats()["guarded"] >= 1
    assert worker.stop() == 0


async def test_a_worker_joining_mid_stream_loses_nothing(scene: Scene) -> None:
    await scene.produce(values(6000))
    first = scene.start("first", FP_DELAY="0.05", FP_BATCH="50")
    await scene.wait_seen(600)

    async def all_committed() -> dict[int, int] | None:
        committed = await scene.committed()
        return committed if len(committed) == PARTITIONS else None

    await eventually(all_committed, timeout=30, what="a commit on every partition")
    second = scene.start("second", FP_DELAY="0.05", FP_BATCH="50")

    async def both_took_some() -> bool:
        first.alive()
        second.alive()
        return bool(second.seen())

    await eventually(both_took_some, timeout=90, interval=0.2, what="the second worker taking")
    await scene.wait_committed_to_end(timeout=120)

    # Nothing lost; each worker took each message at most once and in order; a message
    # both took (at least once, around the rebalance) is one of a partition that moved.
    seen = first.seen() + second.seen()
    assert set(seen) == scene.expected()
    for worker in (first, second):
        twice = [pair for pair, n in Counter(worker.seen()).items() if n > 1]
        assert twice == []
        for partition in range(PARTITIONS):
            offsets = [o for p, o in worker.seen() if p == partition]
            assert offsets == sorted(offsets)
    moved = {p for p, _ in second.seen()}
    assert {p for p, n in Counter(seen).items() if n > 1} <= {(p, o) for p, o in seen if p in moved}
    assert first.stop() == 0
    assert second.stop() == 0


async def test_shutdown_mid_batch_commits_no_offset_past_the_acked(scene: Scene) -> None:
    await scene.produce(values(4000))
    # 1 s a batch: SIGTERM lands while batches are in hand and more are queued.
    worker = scene.start("stopping", FP_DELAY="1.0", FP_BATCH="100")
    await scene.wait_seen(300)
    assert worker.stop() == 0

    committed = await scene.committed()
    acked = set(worker.acked())
    assert committed  # it committed what it acked
    for partition, offset in committed.items():
        # Every message below the committed offset was acked: nothing skipped.
        assert {(partition, o) for o in range(offset)} <= acked
    assert sum(committed.values()) < 4000  # the backlog was not committed


async def end_offsets(brokers: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=brokers)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def test_scene_helpers_agree_with_kafka(scene: Scene) -> None:
    """What the tests above expect is what Kafka holds."""
    await scene.produce(values(10))
    assert await end_offsets(scene.brokers, scene.topic) == dict(scene.produced)
