"""The pure parts of dead_letters.py: what an operator is shown of a letter, offsets, headers."""

from __future__ import annotations

import pytest

from orderstream.dead_letters import (
    DeadLetter,
    DeadLetterError,
    escape_text,
    parse_offset,
    replay_headers,
)


def letter(value: bytes, *headers: tuple[str, bytes]) -> DeadLetter:
    return DeadLetter("orders.dlq", 1, 7, 1_764_646_200_123, b"k", value, tuple(headers))


@pytest.mark.parametrize(
    "value, preview, binary",
    [
        (b"not json", "not json", False),
        (b'{"a":\n\t1}', '{"a":\\n\\t1}', False),
        (b"\x00\xff\x1b[2J", "\\x00\\xff\\x1b[2J", True),
        ("caf\u00e9 \u202eevil\u200b".encode(), "caf\u00e9 \\u202eevil\\u200b", False),
        (b"back\\slash", "back\\\\slash", False),
        (b"", "", False),
    ],
)
def test_preview_is_escaped_and_binary_is_said(value: bytes, preview: str, binary: bool) -> None:
    shown = letter(value)
    assert (shown.preview, shown.binary, shown.size) == (preview, binary, len(value))


def test_preview_is_cut_at_200_characters() -> None:
    assert letter(b"x" * 5000).preview == "x" * 200 + "…"
    assert letter("é".encode() * 300).preview == "é" * 200 + "…"
    assert escape_text("abc", 3) == "abc"


def test_what_the_headers_say() -> None:
    shown = letter(
        b'{"order_uid": "a\\u001b1"}',
        ("x-source-topic", b"orders"),
        ("x-source-partition", b"3"),
        ("x-source-offset", b"42"),
        ("x-error-reason", b"not_an_order"),
        ("x-error", b"bad \x1b"),
        ("x-source-topic", b"orders"),
        ("x-source-partition", b"0"),
        ("x-source-offset", b"9"),
    )
    body = shown.as_json()
    assert body["source"] == {"topic": "orders", "partition": 0, "offset": 9}  # the last one
    assert (body["reason"], body["error"], body["order_uid"]) == (
        "not_an_order",
        "bad \\x1b",
        "a\\x1b1",
    )
    assert body["timestamp"] == "2025-12-02T03:30:00.123Z"
    assert letter(b"x", ("x-source-partition", b"zero")).source is None
    stub = letter(b"x" * 1024, ("x-truncated", b"true"), ("x-original-size", b"2000000"))
    assert (stub.truncated, stub.size) == (True, 2_000_000)


def test_a_replay_keeps_the_message_headers_and_says_where_from() -> None:
    shown = letter(
        b"{}",
        ("trace", b"1"),
        ("x-source-topic", b"orders"),
        ("x-error-reason", b"invalid"),
        ("x-error", b"..."),
        ("x-replayed-from", b"orders.dlq:0:1"),
        ("x-truncated", b"false"),
    )
    assert replay_headers(shown) == [("trace", b"1"), ("x-replayed-from", b"orders.dlq:1:7")]


@pytest.mark.parametrize("text, expected", [("0:7", (0, 7)), (" 12:0 ", (12, 0))])
def test_offsets_parse(text: str, expected: tuple[int, int]) -> None:
    assert parse_offset(text) == expected


@pytest.mark.parametrize("text", ["", "7", "0:", ":1", "-1:2", "0:1:2", "a:b", "٣:1", "0:1\n2"])
def test_malformed_offsets_are_refused(text: str) -> None:
    with pytest.raises(DeadLetterError, match="PARTITION:OFFSET"):
        parse_offset(text)
