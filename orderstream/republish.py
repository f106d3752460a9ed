"""Publishing consumed messages again (dead letters, forwarded orders) so that none can stop ingest.

A message the broker accepted on the orders topic can still be refused when it is published
again: it gains headers (its source position, the error), and the target topic may take less.
Refused, the batch could never be acked, and every restart would read the same message again.
So a message that is too large is replaced by a smaller one that still records where it came
from: a dead letter by a bounded stub, a forwarded order by a copy without its original headers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError

logger = logging.getLogger(__name__)

# Requests up to this size leave the service's producers; the broker's limit (message.max.bytes,
# 1 MiB by default, or the topic's max.message.bytes) is what decides, and a refusal is handled.
MAX_REQUEST_BYTES = 16 * 1024 * 1024
# What a dead-letter stub keeps of the original message.
STUB_VALUE_BYTES = 1024
STUB_KEY_BYTES = 256
STUB_ERROR_BYTES = 1024

# The client's own check (max_request_size) and the broker's answers for a message too large.
TOO_LARGE: tuple[type[Exception], ...] = (MessageSizeTooLargeError, RecordListTooLargeError)

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Outgoing:
    """One message to publish."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    partition: int | None = None

    @property
    def size(self) -> int:
        return (
            len(self.key or b"")
            + len(self.value or b"")
            + sum(len(name) + len(value) for name, value in self.headers)
        )


# Given a message Kafka refused as too large, the message to publish instead (or None: give up).
Shrink = Callable[[Outgoing], Outgoing | None]


async def publish_all(
    producer: AIOKafkaProducer, messages: Sequence[Outgoing], shrink: Shrink
) -> list[int]:
    """Publish ``messages`` and wait until Kafka has each; return the indexes of those it
    refused for good.

    A message refused as too large is replaced by ``shrink(message)`` (again, while it keeps
    being refused and ``shrink`` has something smaller). Other errors propagate.
    """
    pending = [(message, await _send(producer, message)) for message in messages]
    refused: list[int] = []
    for index, (message, future) in enumerate(pending):
        while True:
            try:
                await future
                break
            except TOO_LARGE as exc:
                smaller = shrink(message)
                if smaller is None or smaller.size >= message.size:
                    refused.append(index)
                    break
                logger.warning(
                    "Kafka refused a %d-byte message for %s (%s); publishing %d bytes instead",
                    message.size,
                    message.topic,
                    type(exc).__name__,
                    smaller.size,
                )
                message = smaller
                future = await _send(producer, message)
    return refused


async def _send(producer: AIOKafkaProducer, message: Outgoing) -> asyncio.Future[object]:
    """The delivery future of ``message``; the client's own size refusal comes through it too."""
    try:
        return await producer.send(
            message.topic,
            message.value,
            key=message.key,
            partition=message.partition,
            headers=message.headers,
        )
    except TOO_LARGE as exc:
        failed: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        failed.set_exception(exc)
        return failed


def dead_letter_stub(letter: Outgoing, *, keep: Sequence[str]) -> Outgoing:
    """A bounded stand-in for a dead letter: the headers named in ``keep`` (the reason, the
    source position), the original size, and a prefix of the key and the value."""
    kept = [(name, value[:STUB_ERROR_BYTES]) for name, value in letter.headers if name in keep]
    return replace(
        letter,
        key=(letter.key or b"")[:STUB_KEY_BYTES] or None,
        value=(letter.value or b"")[:STUB_VALUE_BYTES],
        headers=[*kept, ("x-original-size", str(letter.size).encode()), ("x-truncated", b"true")],
    )


def without_headers(message: Outgoing, *, keep: Sequence[str]) -> Outgoing:
    """``message`` with only the headers named in ``keep``."""
    return replace(
        message, headers=[(name, value) for name, value in message.headers if name in keep]
    )
