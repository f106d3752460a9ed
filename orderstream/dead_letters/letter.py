"""One dead letter and what an operator is shown of it: reason, source, a safe preview.

Everything taken from the message is escaped (escape_text): a letter can hold any bytes, and
it is printed on terminals and shown on the page.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

REPLAYED_FROM = "x-replayed-from"
# Headers the worker adds to a dead letter; a replay sends the message without them.
LETTER_HEADERS = frozenset(
    {
        "x-source-topic",
        "x-source-partition",
        "x-source-offset",
        "x-error-reason",
        "x-error",
        "x-original-size",
        "x-truncated",
        REPLAYED_FROM,
    }
)
PREVIEW_CHARS = 200
# What of a header's text is shown (the x-error header is at most 4096 bytes).
TEXT_CHARS = 4096
# Unicode categories shown escaped: controls, format characters (bidi overrides, zero-width),
# surrogates, private use, unassigned, line and paragraph separators.
ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
READABLE_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def escape_text(text: str, limit: int | None = None) -> str:
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


def header_text(raw: bytes | None, limit: int = TEXT_CHARS) -> str | None:
    return None if raw is None else escape_text(raw.decode("utf-8", "surrogateescape"), limit)


@dataclass(frozen=True)
class DeadLetter:
    """One message of the dead-letter topic, with what its headers say."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # milliseconds since the epoch
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> bytes | None:
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
    def reason(self) -> str | None:
        return header_text(self.header("x-error-reason"), 100)

    @property
    def truncated(self) -> bool:
        return self.header("x-truncated") == b"true"

    @property
    def source(self) -> tuple[str, int, int] | None:
        """Where the worker read the message (topic, partition, offset), if the headers say."""
        topic = self.header("x-source-topic")
        partition, offset = self.header("x-source-partition"), self.header("x-source-offset")
        try:
            return (topic.decode(), int(partition or b""), int(offset or b"")) if topic else None
        except (UnicodeDecodeError, ValueError):
            return None

    @property
    def replayed_from(self) -> str | None:
        return header_text(self.header(REPLAYED_FROM), 300)

    @property
    def size(self) -> int:
        """The payload's bytes; for a stub, the original letter's (x-original-size)."""
        original = self.header("x-original-size")
        if self.truncated and original is not None and original.isdigit():
            return int(original)
        return len(self.value or b"")

    @property
    def order_uid(self) -> str | None:
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
        head = (self.value or b"")[: PREVIEW_CHARS * 4 + 4]
        text = escape_text(head.decode("utf-8", "surrogateescape"), PREVIEW_CHARS)
        if len(self.value or b"") > len(head) and not text.endswith("…"):
            text += "…"
        return text

    @property
    def time(self) -> str:
        moment = datetime.fromtimestamp(self.timestamp / 1000, tz=UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def as_json(self) -> dict[str, Any]:
        """The letter as GET /api/dead-letters and `dlq list --json` give it."""
        source = self.source
        return {
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.time,
            "reason": self.reason,
            "error": header_text(self.header("x-error")),
            "order_uid": self.order_uid,
            "source": None
            if source is None
            else {
                "topic": escape_text(source[0], 300),
                "partition": source[1],
                "offset": source[2],
            },
            "replayed_from": self.replayed_from,
            "size": self.size,
            "truncated": self.truncated,
            "binary": self.binary,
            "preview": self.preview,
        }


def replay_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The message's own headers (without the worker's dead-letter headers) and where it is
    replayed from."""
    return [
        *((name, value) for name, value in letter.headers if name not in LETTER_HEADERS),
        (REPLAYED_FROM, letter.position.encode()),
    ]
