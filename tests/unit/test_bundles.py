"""Cache-update bundles: many (order_uid, body) pairs in one Kafka message, and back."""

import pytest

from orderstream.cache.bundle import (
    FRAME_HEADER,
    VERSION,
    MalformedBundle,
    UnknownBundleVersion,
    bundle,
    unbundle,
)

ENTRIES = [(b"a", b'{"order_uid":"a"}'), (b"b" * 64, b""), (b"c", "ünï".encode() * 100)]


def test_entries_come_back_in_order_from_one_bundle() -> None:
    bundles = list(bundle(ENTRIES))

    assert len(bundles) == 1
    assert unbundle(bundles[0]) == ENTRIES


def test_no_entries_make_no_bundle() -> None:
    assert list(bundle([])) == []


def test_bundles_stay_within_the_size_limit_and_keep_every_entry() -> None:
    entries = [(f"order-{n}".encode(), bytes(100)) for n in range(1000)]

    bundles = list(bundle(entries, max_bytes=4096))

    assert len(bundles) > 1
    assert all(len(data) <= 4096 for data in bundles)
    assert [entry for data in bundles for entry in unbundle(data)] == entries


def test_an_entry_larger_than_the_limit_travels_alone() -> None:
    big = (b"big", bytes(10_000))

    bundles = list(bundle([(b"x", b"1"), big, (b"y", b"2")], max_bytes=1000))

    assert [unbundle(data) for data in bundles] == [[(b"x", b"1")], [big], [(b"y", b"2")]]


@pytest.mark.parametrize(
    "data",
    [
        b"\x00",  # header cut off
        FRAME_HEADER.pack(5, 10) + b"key",  # frame claims more than is left
        next(bundle(ENTRIES))[:-1],  # last body one byte short
        b'{"order_uid":"an order, not a bundle"}',  # another format altogether
    ],
)
def test_bytes_that_are_not_a_bundle_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedBundle):
        unbundle(data)


def test_a_bundle_starts_with_its_format_version() -> None:
    assert next(bundle(ENTRIES))[:1] == bytes([VERSION])


def test_a_bundle_of_an_unknown_version_is_refused() -> None:
    data = bytes([VERSION + 1]) + next(bundle(ENTRIES))[1:]

    with pytest.raises(UnknownBundleVersion, match=f"version {VERSION + 1}"):
        unbundle(data)


def test_a_bundle_written_before_the_version_byte_still_reads() -> None:
    legacy = next(bundle(ENTRIES))[1:]  # frames only: the first key's length starts with 0

    assert unbundle(legacy) == ENTRIES
