"""Cache updates travel in bundles: one Kafka message carries many (order_uid, Table value) pairs.

One message per partition per stored batch instead of one per order: each Kafka message costs
the worker far more CPU (send, fetch, Faust's stream machinery) than its bytes do.

A bundle is a version byte (VERSION), then a run of frames: key length (2 bytes), value length
(4 bytes), key, value. A bundle of an unknown version is refused (a newer writer's format is
not guessed at). Bundles written before the version byte existed start with the high byte of
their first key's length, which is 0 (an order_uid has at most 64 bytes): they are read as
version 0, frames only, so a rolling upgrade loses no cache update, which could leave an
older copy of an order in the cache.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

VERSION = 1
LEGACY_VERSION = 0  # frames without a version byte
FRAME_HEADER = struct.Struct(">HI")
# Well under the broker's and producer's default 1 MB message limit.
MAX_BUNDLE_BYTES = 512 * 1024
HEADER = bytes([VERSION])


class MalformedBundle(ValueError):
    """The bytes are not a bundle of frames (a bug, or a message of another format)."""


class UnknownBundleVersion(MalformedBundle):
    """A bundle of a version this worker cannot read (a newer worker wrote it)."""


def bundle(
    entries: Iterable[tuple[bytes, bytes]], max_bytes: int = MAX_BUNDLE_BYTES
) -> Iterator[bytes]:
    """Pack entries into bundles of at most ``max_bytes`` (or one entry, if it is larger)."""
    parts: list[bytes] = []
    size = 1  # the version byte
    for key, body in entries:
        frame_size = FRAME_HEADER.size + len(key) + len(body)
        if parts and size + frame_size > max_bytes:
            yield HEADER + b"".join(parts)
            parts, size = [], 1
        parts += (FRAME_HEADER.pack(len(key), len(body)), key, body)
        size += frame_size
    if parts:
        yield HEADER + b"".join(parts)


def unbundle(data: bytes) -> list[tuple[bytes, bytes]]:
    """The entries of a bundle, in order; MalformedBundle if a frame runs past the end or the
    version is unknown."""
    if not data:
        return []
    if data[0] == VERSION:
        offset = 1
    elif data[0] == LEGACY_VERSION:
        offset = 0
    else:
        raise UnknownBundleVersion(f"bundle version {data[0]} (this worker reads {VERSION})")
    entries = []
    end = len(data)
    while offset < end:
        if offset + FRAME_HEADER.size > end:
            raise MalformedBundle(f"frame header cut off at byte {offset} of {end}")
        key_length, body_length = FRAME_HEADER.unpack_from(data, offset)
        key_start = offset + FRAME_HEADER.size
        body_start = key_start + key_length
        offset = body_start + body_length
        if offset > end:
            raise MalformedBundle(
                f"frame at byte {key_start - FRAME_HEADER.size} claims "
                f"{key_length}+{body_length} bytes, {end - key_start} left"
            )
        entries.append((data[key_start:body_start], data[body_start:offset]))
    return entries
