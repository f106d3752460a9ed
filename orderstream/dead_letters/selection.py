"""What a replay request names (offsets, every letter, a reason) and the refusals."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .letter import escape_text

OFFSET_SYNTAX = re.compile(r"([0-9]{1,9}):([0-9]{1,19})", re.ASCII)


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


def parse_offset(text: str) -> tuple[int, int]:
    """``P:O`` (partition:offset) as numbers; DeadLetterError when it is not that."""
    match = OFFSET_SYNTAX.fullmatch(text.strip())
    if match is None:
        raise DeadLetterError(
            f"not a dead letter's position: {escape_text(text, 100)!r}; "
            "expected PARTITION:OFFSET, e.g. 0:7"
        )
    return int(match.group(1)), int(match.group(2))


def parse_offsets(texts: Iterable[str]) -> list[tuple[int, int]]:
    return sorted({parse_offset(text) for text in texts})


def error_text(exc: Exception) -> str:
    """The message of a refusal, with the offsets it names."""
    offsets = getattr(exc, "details", {}).get("offsets")
    return f"{exc}: {', '.join(offsets)}" if offsets else str(exc)


@dataclass
class Selection:
    """What a replay request names: positions, and/or every letter (of a reason)."""

    offsets: list[tuple[int, int]] = field(default_factory=list)
    every: bool = False
    reason: str | None = None

    def names_something(self) -> bool:
        return bool(self.offsets) or self.every or self.reason is not None
