"""A batch triaged (orderstream/agents.py triage): store, dead-letter or forward each message."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from orderstream.agents import triage
from orderstream.order import partition_of

PARTITIONS = 4


@dataclass
class Message:
    value: bytes
    partition: int
    topic: str = "orders"
    offset: int = 0
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class Event:
    """The part of a Faust event triage reads: the value and where its message came from."""

    value: bytes
    message: Message


def event(value: bytes, partition: int) -> Any:
    return Event(value, Message(value, partition))


def home(uid: str) -> int:
    return partition_of(uid.encode(), PARTITIONS)


def test_orders_on_their_partition_are_accepted_others_forwarded_bad_ones_rejected(
    model_json: bytes,
) -> None:
    model = orjson.loads(model_json)
    uid = model["order_uid"]
    elsewhere = (home(uid) + 1) % PARTITIONS
    events = [
        event(model_json, home(uid)),
        event(model_json, elsewhere),
        event(b"not json", 0),
        event(orjson.dumps({**model, "items": []}), home(uid)),
    ]

    batch = triage(
        events, partition_for=lambda key: partition_of(key, PARTITIONS), max_clock_skew=60
    )

    assert [item.event for item in batch.accepted] == [events[0]]
    assert batch.accepted[0].partition == home(uid) and batch.accepted[0].key == uid.encode()
    assert orjson.loads(batch.accepted[0].body) == model
    assert [item.event for item in batch.misplaced] == [events[1]]
    assert [(item.event, item.reason) for item in batch.rejected] == [
        (events[2], "not_json"),
        (events[3], "invalid"),
    ]
    assert batch.rejected[1].order_uid == uid  # the log line names the order it claims to be


def test_an_order_from_the_future_is_rejected_beyond_the_clock_skew(order_dict: Any) -> None:
    data = order_dict({"date_created": "2999-01-01T00:00:00Z"})
    raw = orjson.dumps(data)

    batch = triage(
        [event(raw, home(data["order_uid"]))],
        partition_for=lambda key: partition_of(key, PARTITIONS),
        max_clock_skew=60,
    )

    assert batch.accepted == [] and len(batch.rejected) == 1
    assert "lies in the future" in batch.rejected[0].error
