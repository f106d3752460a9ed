"""The dead-letter topic as an operator sees it: list the newest letters, replay chosen ones.

Both the `dlq` command (commands.py) and the HTTP API (dead_letter_api.py) call this module;
it talks to Kafka with aiokafka directly, with the service's TLS/SASL settings
(kafka_security.py). Every selection is bounded by the end offsets read when it starts, so a
replay never chases the letters its own replays produce.

A replayed message is the letter's key and value, unchanged, with the letter's original
headers (those it had on the orders topic) and ``x-replayed-from: <dlq>:<partition>:<offset>``;
it goes to its source topic, partitioned by its key as any producer's message. One that is
still bad comes back as a new letter carrying that header (agents.dead_letter keeps it).
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Iterable, Optional

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from . import kafka_security
from .config import Settings
from .republish import MAX_REQUEST_BYTES

REPLAYED_FROM = "x-replayed-from"
# Headers the worker adds to a dead letter; a replay sends the message without them.
LETTER_HEADERS = frozenset({"x-source-topic", "x-source-partition", "x-source-offset",
                            "x-error-reason", "x-error", "x-original-size", "x-truncated",
                            REPLAYED_FROM})
PREVIEW_CHARS = 200
# What of a header's text is shown (the x-error header is at most 4096 bytes).
TEXT_CHARS = 4096
LIST_LIMIT_MAX = 500
# Seconds without an answer (opening, or a read that gets no message) before Kafka counts as
# unavailable.
READ_TIMEOUT = 20.0
OFFSET_SYNTAX = re.compile(r"([0-9]{1,9}):([0-9]{1,19})", re.ASCII)
# Unicode categories shown escaped: controls, format characters (bidi overrides, zero-width),
# surrogates, private use, unassigned, line and paragraph separators.
ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
READABLE_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


class DeadLetterError(Exception):
    """A request the dead-letter tools refuse; ``status`` is its HTTP status."""

    status = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


class NothingSelected(DeadLetterError):
    """The request names no letter (no offsets, no --all, no --reason)."""


class NoneMatch(DeadLetterError):
    """--all or --reason found no letter to replay."""

    status = 404


class UnknownOffsets(DeadLetterError):
    """Named offsets hold no letter of the topic (never written, or deleted by retention)."""

    status = 404


class NotReplayable(DeadLetterError):
    """Named letters that cannot be replayed: stubs, or letters of a foreign source topic."""

    status = 409


class KafkaUnavailable(Exception):
    """Kafka did not answer within READ_TIMEOUT, or refused the request."""


def escape_text(text: str, limit: Optional[int] = None) -> str:
    """``text`` safe to print on a terminal or a page: controls, format characters and
    undecodable bytes (surrogate escapes) as ``\\xNN``/``\\uNNNN``; backslashes doubled;
    cut after ``limit`` characters with an ellipsis."""
    out = []
    for char in text if limit is None else text[:limit]:
        code = ord(char)
        if char in READABLE_ESCAPES:
            out.append(READABLE_ESCAPES[char])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif unicodedata.category(char) in ESCAPED_CATEGORIES:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    if limit is not None and len(text) > limit:
        out.append("…")
    return "".join(out)


def is_binary(data: bytes) -> bool:
    """Not text: invalid UTF-8, or control characters other than tab, newline, return."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return any(unicodedata.category(char) == "Cc" and char not in "\t\n\r" for char in text)


def header_text(raw: Optional[bytes], limit: int = TEXT_CHARS) -> Optional[str]:
    return None if raw is None else escape_text(raw.decode("utf-8", "surrogateescape"), limit)


def parse_offset(text: str) -> tuple[int, int]:
    """``P:O`` (partition:offset) as numbers; DeadLetterError when it is not that."""
    match = OFFSET_SYNTAX.fullmatch(text.strip())
    if match is None:
        raise DeadLetterError(f"not a dead letter's position: {escape_text(text, 100)!r}; "
                              "expected PARTITION:OFFSET, e.g. 0:7")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class DeadLetter:
    """One message of the dead-letter topic, with what its headers say."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # milliseconds since the epoch
    key: Optional[bytes]
    value: Optional[bytes]
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> Optional[bytes]:
        """The header's last value: a forwarded message may carry an earlier one too."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found

    @property
    def position(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def reason(self) -> Optional[str]:
        return header_text(self.header("x-error-reason"), 100)

    @property
    def truncated(self) -> bool:
        return self.header("x-truncated") == b"true"

    @property
    def source(self) -> Optional[tuple[str, int, int]]:
        """Where the worker read the message (topic, partition, offset), if the headers say."""
        topic = self.header("x-source-topic")
        partition, offset = self.header("x-source-partition"), self.header("x-source-offset")
        try:
            return (topic.decode(), int(partition or b""), int(offset or b"")) if topic else None
        except (UnicodeDecodeError, ValueError):
            return None

    @property
    def replayed_from(self) -> Optional[str]:
        return header_text(self.header(REPLAYED_FROM), 300)

    @property
    def size(self) -> int:
        """The payload's bytes; for a stub, the original letter's (x-original-size)."""
        original = self.header("x-original-size")
        if self.truncated and original is not None and original.isdigit():
            return int(original)
        return len(self.value or b"")

    @property
    def order_uid(self) -> Optional[str]:
        """The order_uid the payload claims, if it is a JSON object with one."""
        try:
            data = orjson.loads(self.value or b"")
        except orjson.JSONDecodeError:
            return None
        uid = data.get("order_uid") if isinstance(data, dict) else None
        return escape_text(uid, 100) if isinstance(uid, str) else None

    @property
    def binary(self) -> bool:
        return is_binary(self.value or b"")

    @property
    def preview(self) -> str:
        # 4 bytes a character at most: enough bytes for PREVIEW_CHARS characters.
        head = (self.value or b"")[:PREVIEW_CHARS * 4 + 4]
        text = escape_text(head.decode("utf-8", "surrogateescape"), PREVIEW_CHARS)
        if len(self.value or b"") > len(head) and not text.endswith("…"):
            text += "…"
        return text

    @property
    def time(self) -> str:
        moment = datetime.fromtimestamp(self.timestamp / 1000, tz=timezone.utc)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def as_json(self) -> dict[str, Any]:
        """The letter as GET /api/dead-letters and `dlq list --json` give it."""
        source = self.source
        return {
            "partition": self.partition, "offset": self.offset, "timestamp": self.time,
            "reason": self.reason, "error": header_text(self.header("x-error")),
            "order_uid": self.order_uid,
            "source": None if source is None else {
                "topic": escape_text(source[0], 300), "partition": source[1],
                "offset": source[2]},
            "replayed_from": self.replayed_from, "size": self.size,
            "truncated": self.truncated, "binary": self.binary, "preview": self.preview,
        }


@dataclass
class Listing:
    topic: str
    total: int
    letters: list[DeadLetter]


@dataclass(frozen=True)
class Replayed:
    letter: DeadLetter
    topic: str
    partition: Optional[int] = None  # None on a dry run
    offset: Optional[int] = None


@dataclass(frozen=True)
class Skipped:
    letter: DeadLetter
    why: str


@dataclass
class Selection:
    """What a replay request names: positions, and/or every letter (of a reason)."""

    offsets: list[tuple[int, int]] = field(default_factory=list)
    every: bool = False
    reason: Optional[str] = None

    def names_something(self) -> bool:
        return bool(self.offsets) or self.every or self.reason is not None


@dataclass
class Replay:
    dry_run: bool
    replayed: list[Replayed]
    skipped: list[Skipped]


class DeadLetterTopic:
    """A reader (and replayer) of the dead-letter topic of ``settings``; use ``async with``."""

    def __init__(self, settings: Settings, producer: Optional[AIOKafkaProducer] = None) -> None:
        self.settings = settings
        self.topic = settings.dead_letter_topic
        self.brokers = ",".join(settings.kafka_brokers)
        self.security = kafka_security.client_kwargs(settings)
        self._producer = producer  # the worker's, else one of our own when replaying
        self._own_producer: Optional[AIOKafkaProducer] = None
        self._consumer: Optional[AIOKafkaConsumer] = None
        # Each partition's [first, end) offsets, read once when the reader opens.
        self.bounds: dict[int, tuple[int, int]] = {}

    async def __aenter__(self) -> DeadLetterTopic:
        try:
            await asyncio.wait_for(self._open(), READ_TIMEOUT)
        except (KafkaError, asyncio.TimeoutError) as exc:
            await self.close()
            raise KafkaUnavailable(f"Kafka at {self.brokers} did not answer: "
                                   f"{type(exc).__name__}: {exc}") from exc
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _open(self) -> None:
        partitions = await self._partitions()
        if not partitions:
            return  # no topic yet: no worker has started, no letter exists
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.brokers, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", max_partition_fetch_bytes=MAX_REQUEST_BYTES,
            fetch_max_bytes=4 * MAX_REQUEST_BYTES, **self.security)
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
                        yield DeadLetter(self.topic, record.partition, record.offset,
                                         record.timestamp, record.key, record.value,
                                         tuple(record.headers or ()))
            for tp in tps:
                if await consumer.position(tp) >= pending[tp.partition][1]:
                    del pending[tp.partition]

    async def newest(self, limit: int, reason: Optional[str] = None) -> list[DeadLetter]:
        """The newest ``limit`` letters (of ``reason``), newest first: by timestamp across
        partitions, by offset within one. Reads each partition backwards, window by window,
        until it has ``limit`` or reaches the start."""
        found: dict[int, list[DeadLetter]] = {p: [] for p in self.bounds}
        edge = {p: end for p, (_, end) in self.bounds.items()}
        window = limit
        while True:
            ranges = {p: (max(self.bounds[p][0], edge[p] - window), edge[p])
                      for p in self.bounds
                      if len(found[p]) < limit and edge[p] > self.bounds[p][0]}
            if not ranges:
                break
            async for letter in self.read(ranges):
                if reason is None or letter.reason == reason:
                    found[letter.partition].append(letter)
            for p, (start, _) in ranges.items():
                edge[p] = start
            window *= 4
        letters = [letter for batch in found.values() for letter in batch]
        letters.sort(key=lambda letter: (letter.timestamp, letter.offset, letter.partition),
                     reverse=True)
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
            raise UnknownOffsets("no dead letter at these offsets",
                                 offsets=[f"{p}:{o}" for p, o in unknown])
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
                        selection.reason is None or letter.reason == selection.reason):
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
                raise UnknownOffsets("no dead letter at these offsets",
                                     offsets=[f"{p}:{o}" for p, o in missing])
            refused = [f"{letter.partition}:{letter.offset}: {why}" for letter in chosen.values()
                       if (why := self.why_not_replayable(letter)) is not None]
            if refused:
                raise NotReplayable("cannot replay " + "; ".join(refused))
        if not chosen:
            raise NoneMatch("no dead letter to replay" + (
                f" with reason {escape_text(selection.reason, 100)!r}"
                if selection.reason is not None else ""), skipped=str(len(skipped)))
        return [chosen[position] for position in sorted(chosen)], skipped

    def _holds(self, partition: int, offset: int) -> bool:
        first, end = self.bounds.get(partition, (0, 0))
        return first <= offset < end

    def why_not_replayable(self, letter: DeadLetter) -> Optional[str]:
        """Why ``letter`` cannot be replayed, or None when it can."""
        if letter.truncated:
            source = letter.source
            where = f" (the original: {source[0]}:{source[1]}:{source[2]})" if source else ""
            return f"a stub, not the message{where}"
        topic = self.target_topic(letter)
        if topic != self.settings.kafka_topic:
            return (f"its source topic {escape_text(topic, 300)!r} is not KAFKA_TOPIC "
                    f"{self.settings.kafka_topic!r}")
        return None

    def target_topic(self, letter: DeadLetter) -> str:
        source = letter.source
        return source[0] if source is not None else self.settings.kafka_topic

    async def replay(self, selection: Selection, *, dry_run: bool = False) -> Replay:
        """Publish the selected letters to their source topic and wait until Kafka has them."""
        letters, skipped = await self.select(selection)
        if dry_run:
            return Replay(True, [Replayed(letter, self.target_topic(letter))
                                 for letter in letters], skipped)
        producer = await self._producer_for_replay()
        futures = []
        try:
            for letter in letters:
                futures.append(await producer.send(
                    self.target_topic(letter), letter.value, key=letter.key,
                    headers=replay_headers(letter)))
            sent = await asyncio.gather(*futures)
        except KafkaError as exc:
            raise KafkaUnavailable(f"publishing the replay: {type(exc).__name__}: {exc}") from exc
        return Replay(False, [Replayed(letter, meta.topic, meta.partition, meta.offset)
                              for letter, meta in zip(letters, sent)], skipped)

    async def _producer_for_replay(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        self._own_producer = AIOKafkaProducer(
            bootstrap_servers=self.brokers, acks="all", max_request_size=MAX_REQUEST_BYTES,
            **self.security)
        await self._own_producer.start()
        return self._own_producer


def replay_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The message's own headers (without the worker's dead-letter headers) and where it is
    replayed from."""
    return [*((name, value) for name, value in letter.headers if name not in LETTER_HEADERS),
            (REPLAYED_FROM, letter.position.encode())]


async def list_letters(settings: Settings, limit: int, reason: Optional[str] = None) -> Listing:
    """The newest ``limit`` letters (of ``reason``) and the topic's size."""
    async with DeadLetterTopic(settings) as topic:
        return Listing(topic.topic, topic.total, await topic.newest(limit, reason))


async def replay_letters(settings: Settings, selection: Selection, *, dry_run: bool = False,
                         producer: Optional[AIOKafkaProducer] = None) -> Replay:
    """Replay the letters ``selection`` names (with ``producer``, else one of its own)."""
    async with DeadLetterTopic(settings, producer) as topic:
        return await topic.replay(selection, dry_run=dry_run)


def error_text(exc: Exception) -> str:
    """The message of a refusal, with the offsets it names."""
    offsets = getattr(exc, "details", {}).get("offsets")
    return f"{exc}: {', '.join(offsets)}" if offsets else str(exc)


def parse_offsets(texts: Iterable[str]) -> list[tuple[int, int]]:
    return sorted({parse_offset(text) for text in texts})


def replay_summary(replay: Replay) -> list[str]:
    """Lines for the CLI: one per replayed letter, one per skipped one, then the count."""
    lines = []
    for item in replay.replayed:
        letter = item.letter
        where = (f"{item.topic}" if item.partition is None
                 else f"{item.topic}:{item.partition}:{item.offset}")
        lines.append(f"{'would replay' if replay.dry_run else 'replayed'} "
                     f"{letter.partition}:{letter.offset} ({letter.reason}, order_uid "
                     f"{letter.order_uid or '-'}) -> {where}")
    for skip in replay.skipped:
        lines.append(f"skipped {skip.letter.partition}:{skip.letter.offset}: {skip.why}")
    verb = "would replay" if replay.dry_run else "replayed"
    lines.append(f"{verb} {len(replay.replayed)} dead letter(s)"
                 + (f", skipped {len(replay.skipped)}" if replay.skipped else ""))
    return lines


def letter_line(letter: DeadLetter) -> str:
    """One line of `dlq list`: position, reason, error, order_uid, source, preview."""
    source = letter.source
    parts = [
        f"offset={letter.offset}", f"partition={letter.partition}", letter.time,
        f"reason={letter.reason or '-'}",
        f"order_uid={letter.order_uid or '-'}",
        "source=" + (f"{escape_text(source[0], 300)}:{source[1]}:{source[2]}" if source else "-"),
    ]
    if letter.replayed_from:
        parts.append(f"replayed_from={letter.replayed_from}")
    if letter.truncated:
        parts.append(f"stub of {letter.size} bytes")
    kind = "binary" if letter.binary else "text"
    parts.append(f"error={header_text(letter.header('x-error'), PREVIEW_CHARS) or '-'}")
    parts.append(f"{kind} {len(letter.value or b'')} bytes: {letter.preview}")
    return "  ".join(parts)


def listing_json(listing: Listing) -> dict[str, Any]:
    return {"topic": listing.topic, "total": listing.total,
            "dead_letters": [letter.as_json() for letter in listing.letters]}


def replay_json(replay: Replay) -> dict[str, Any]:
    return {
        "dry_run": replay.dry_run, "count": len(replay.replayed),
        "replayed": [{"partition": item.letter.partition, "offset": item.letter.offset,
                      "to": {"topic": item.topic, "partition": item.partition,
                             "offset": item.offset}} for item in replay.replayed],
        "skipped": [{"partition": skip.letter.partition, "offset": skip.letter.offset,
                     "why": skip.why} for skip in replay.skipped],
    }

