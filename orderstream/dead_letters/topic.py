"""The dead-letter topic read with aiokafka: its newest letters, and replays of chosen ones.

Kafka is reached with the service's TLS/SASL settings (kafka_security.py). Every selection is
bounded by the end offsets read when the reader opens, so a replay never chases the letters
its own replays produce.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from .. import kafka_security
from ..config import Settings
from ..republish import MAX_REQUEST_BYTES
from .letter import REPLAYED_FROM, DeadLetter, escape_text, replay_headers
from .selection import (
    KafkaUnavailable,
    NoneMatch,
    NothingSelected,
    NotReplayable,
    Selection,
    UnknownOffsets,
)

LIST_LIMIT_MAX = 500
# Seconds without an answer (opening, or a read that gets no message) before Kafka counts as
# unavailable.
READ_TIMEOUT = 20.0


@dataclass
class Listing:
    topic: str
    total: int
    letters: list[DeadLetter]


@dataclass(frozen=True)
class Replayed:
    letter: DeadLetter
    topic: str
    partition: int | None = None  # None on a dry run
    offset: int | None = None


@dataclass(frozen=True)
class Skipped:
    letter: DeadLetter
    why: str


@dataclass
class Replay:
    dry_run: bool
    replayed: list[Replayed]
    skipped: list[Skipped]


class DeadLetterTopic:
    """A reader (and replayer) of the dead-letter topic of ``settings``; use ``async with``."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer | None = None) -> None:
        self.settings = settings
        self.topic = settings.dead_letter_topic
        self.brokers = ",".join(settings.kafka_brokers)
        self.security = kafka_security.client_kwargs(settings)
        self._producer = producer  # the worker's, else one of our own when replaying
        self._own_producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        # Each partition's [first, end) offsets, read once when the reader opens.
        self.bounds: dict[int, tuple[int, int]] = {}

    async def __aenter__(self) -> DeadLetterTopic:
        try:
            await asyncio.wait_for(self._open(), READ_TIMEOUT)
        except (TimeoutError, KafkaError) as exc:
            await self.close()
            raise KafkaUnavailable(
                f"Kafka at {self.brokers} did not answer: {type(exc).__name__}: {exc}"
            ) from exc
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _open(self) -> None:
        partitions = await self._partitions()
        if not partitions:
            return  # no topic yet: no worker has started, no letter exists
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.brokers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=MAX_REQUEST_BYTES,
            fetch_max_bytes=4 * MAX_REQUEST_BYTES,
            **self.security,
        )
        await self._consumer.start()
        tps = [TopicPartition(self.topic, p) for p in partitions]
        self._consumer.assign(tps)
        first = await self._consumer.beginning_offsets(tps)
        end = await self._consumer.end_offsets(tps)
        self.bounds = {tp.partition: (first[tp], end[tp]) for tp in tps}

    async def _partitions(self) -> list[int]:
        """The topic's partitions; asked for among all topics, as naming a missing topic in a
        metadata request makes a broker with auto.create.topics.enable create it."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.brokers, **self.security)
        await admin.start()
        try:
            for topic in await admin.describe_topics():
                if topic["topic"] == self.topic:
                    return sorted(p["partition"] for p in topic["partitions"])
            return []
        finally:
            await admin.close()

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._own_producer is not None:
            await self._own_producer.stop()
            self._own_producer = None

    @property
    def total(self) -> int:
        """Letters in the topic (within the bounds read on opening)."""
        return sum(end - first for first, end in self.bounds.values())

    async def read(self, ranges: dict[int, tuple[int, int]]) -> AsyncIterator[DeadLetter]:
        """The letters at offsets [start, stop) of each partition of ``ranges``."""
        consumer = self._consumer
        pending = {p: span for p, span in ranges.items() if span[0] < span[1]}
        if consumer is None or not pending:
            return
        for partition, (start, _) in pending.items():
            consumer.seek(TopicPartition(self.topic, partition), start)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READ_TIMEOUT
        while pending:
            if loop.time() > deadline:
                raise KafkaUnavailable(f"reading {self.topic}: no message for {READ_TIMEOUT:.0f} s")
            tps = [TopicPartition(self.topic, p) for p in pending]
            try:
                batches = await consumer.getmany(*tps, timeout_ms=200)
            except KafkaError as exc:
                raise KafkaUnavailable(f"reading {self.topic}: {exc}") from exc
            if batches:
                deadline = loop.time() + READ_TIMEOUT  # a long read is fine while it moves
            for tp, records in batches.items():
                stop = pending[tp.partition][1]
                for record in records:
                    if record.offset < stop:
                        yield DeadLetter(
                            self.topic,
                            record.partition,
                            record.offset,
                            record.timestamp,
                            record.key,
                            record.value,
                            tuple(record.headers or ()),
                        )
            for tp in tps:
                if await consumer.position(tp) >= pending[tp.partition][1]:
                    del pending[tp.partition]

    async def newest(self, limit: int, reason: str | None = None) -> list[DeadLetter]:
        """The newest ``limit`` letters (of ``reason``), newest first: by timestamp across
        partitions, by offset within one. Reads each partition backwards, window by window,
        until it has ``limit`` or reaches the start."""
        found: dict[int, list[DeadLetter]] = {p: [] for p in self.bounds}
        edge = {p: end for p, (_, end) in self.bounds.items()}
        window = limit
        while True:
            ranges = {
                p: (max(self.bounds[p][0], edge[p] - window), edge[p])
                for p in self.bounds
                if len(found[p]) < limit and edge[p] > self.bounds[p][0]
            }
            if not ranges:
                break
            async for letter in self.read(ranges):
                if reason is None or letter.reason == reason:
                    found[letter.partition].append(letter)
            for p, (start, _) in ranges.items():
                edge[p] = start
            window *= 4
        letters = [letter for batch in found.values() for letter in batch]
        letters.sort(
            key=lambda letter: (letter.timestamp, letter.offset, letter.partition), reverse=True
        )
        return letters[:limit]

    async def select(self, selection: Selection) -> tuple[list[DeadLetter], list[Skipped]]:
        """The letters a replay names, in topic order, and those skipped; raises
        UnknownOffsets, NotReplayable, NoneMatch or NothingSelected."""
        if not selection.names_something():
            raise NothingSelected("nothing selected: name letters by offset, or all (of a reason)")
        chosen: dict[tuple[int, int], DeadLetter] = {}
        skipped: list[Skipped] = []
        wanted = set(selection.offsets)
        unknown = sorted(position for position in wanted if not self._holds(*position))
        if unknown:
            raise UnknownOffsets(
                "no dead letter at these offsets", offsets=[f"{p}:{o}" for p, o in unknown]
            )
        if selection.every or selection.reason is not None:
            # Every letter: the whole topic, once. A letter that came back from an earlier
            # replay (another letter names it in x-replayed-from) is left out, as that newer
            # letter stands for it: replaying --all again and again never multiplies letters.
            matching: list[DeadLetter] = []
            came_back: set[str] = set()
            async for letter in self.read(self.bounds):
                origin = letter.header(REPLAYED_FROM)
                if origin is not None:
                    came_back.add(origin.decode("utf-8", "replace"))
                if (letter.partition, letter.offset) in wanted or (
                    selection.reason is None or letter.reason == selection.reason
                ):
                    matching.append(letter)
            for letter in matching:
                named = (letter.partition, letter.offset) in wanted
                why = self.why_not_replayable(letter)
                if why is None and not named and letter.position in came_back:
                    why = "replayed already: a later letter came back from it"
                if why is None:
                    chosen[(letter.partition, letter.offset)] = letter
                elif not named:
                    skipped.append(Skipped(letter, why))
                else:
                    raise NotReplayable(f"{letter.partition}:{letter.offset}: {why}")
        else:
            ranges: dict[int, tuple[int, int]] = {}
            for p, o in wanted:
                start, stop = ranges.get(p, (o, o + 1))
                ranges[p] = (min(start, o), max(stop, o + 1))
            async for letter in self.read(ranges):
                if (letter.partition, letter.offset) in wanted:
                    chosen[(letter.partition, letter.offset)] = letter
            missing = sorted(wanted - set(chosen))
            if missing:  # a gap in the offsets (a compacted or transactional topic)
                raise UnknownOffsets(
                    "no dead letter at these offsets", offsets=[f"{p}:{o}" for p, o in missing]
                )
            refused = [
                f"{letter.partition}:{letter.offset}: {why}"
                for letter in chosen.values()
                if (why := self.why_not_replayable(letter)) is not None
            ]
            if refused:
                raise NotReplayable("cannot replay " + "; ".join(refused))
        if not chosen:
            raise NoneMatch(
                "no dead letter to replay"
                + (
                    f" with reason {escape_text(selection.reason, 100)!r}"
                    if selection.reason is not None
                    else ""
                ),
                skipped=str(len(skipped)),
            )
        return [chosen[position] for position in sorted(chosen)], skipped

    def _holds(self, partition: int, offset: int) -> bool:
        first, end = self.bounds.get(partition, (0, 0))
        return first <= offset < end

    def why_not_replayable(self, letter: DeadLetter) -> str | None:
        """Why ``letter`` cannot be replayed, or None when it can."""
        if letter.truncated:
            source = letter.source
            where = f" (the original: {source[0]}:{source[1]}:{source[2]})" if source else ""
            return f"a stub, not the message{where}"
        topic = self.target_topic(letter)
        if topic != self.settings.kafka_topic:
            return (
                f"its source topic {escape_text(topic, 300)!r} is not KAFKA_TOPIC "
                f"{self.settings.kafka_topic!r}"
            )
        return None

    def target_topic(self, letter: DeadLetter) -> str:
        source = letter.source
        return source[0] if source is not None else self.settings.kafka_topic

    async def replay(self, selection: Selection, *, dry_run: bool = False) -> Replay:
        """Publish the selected letters to their source topic and wait until Kafka has them."""
        letters, skipped = await self.select(selection)
        if dry_run:
            return Replay(
                True, [Replayed(letter, self.target_topic(letter)) for letter in letters], skipped
            )
        producer = await self._producer_for_replay()
        futures = []
        try:
            for letter in letters:
                futures.append(
                    await producer.send(
                        self.target_topic(letter),
                        letter.value,
                        key=letter.key,
                        headers=replay_headers(letter),
                    )
                )
            sent = await asyncio.gather(*futures)
        except KafkaError as exc:
            raise KafkaUnavailable(f"publishing the replay: {type(exc).__name__}: {exc}") from exc
        return Replay(
            False,
            [
                Replayed(letter, meta.topic, meta.partition, meta.offset)
                for letter, meta in zip(letters, sent, strict=True)
            ],
            skipped,
        )

    async def _producer_for_replay(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        self._own_producer = AIOKafkaProducer(
            bootstrap_servers=self.brokers,
            acks="all",
            max_request_size=MAX_REQUEST_BYTES,
            **self.security,
        )
        await self._own_producer.start()
        return self._own_producer


async def list_letters(settings: Settings, limit: int, reason: str | None = None) -> Listing:
    """The newest ``limit`` letters (of ``reason``) and the topic's size."""
    async with DeadLetterTopic(settings) as topic:
        return Listing(topic.topic, topic.total, await topic.newest(limit, reason))


async def replay_letters(
    settings: Settings,
    selection: Selection,
    *,
    dry_run: bool = False,
    producer: AIOKafkaProducer | None = None,
) -> Replay:
    """Replay the letters ``selection`` names (with ``producer``, else one of its own)."""
    async with DeadLetterTopic(settings, producer) as topic:
        return await topic.replay(selection, dry_run=dry_run)
