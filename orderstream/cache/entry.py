"""A cache entry: the order's JSON body, after the version it was stored with.

The version is the offset of the order's message on its own partition (see sql/0003). The cache
agent keeps the newest version of each order, so a late write (a worker that stalled past its
session and wakes up) cannot replace a newer entry. An entry without a version (cached before
versions existed, or warmed up from a row without one) is the bare body: it starts with "{",
which no 8-byte offset below 2^62 does, and any versioned write replaces it.
"""

from __future__ import annotations

VERSION_BYTES = 8
UNKNOWN_VERSION = -1


def encode_entry(version: int | None, body: bytes) -> bytes:
    """The Table value of ``body`` at ``version`` (None: unknown)."""
    if version is None:
        return body
    return version.to_bytes(VERSION_BYTES, "big") + body


def entry_version(value: bytes) -> int:
    """The version of a Table value; UNKNOWN_VERSION (older than any) for a bare body."""
    if value[:1] == b"{":
        return UNKNOWN_VERSION
    return int.from_bytes(value[:VERSION_BYTES], "big")


def entry_body(value: bytes) -> bytes:
    """The order's JSON body in a Table value, as the API serves it."""
    return value if value[:1] == b"{" else value[VERSION_BYTES:]
