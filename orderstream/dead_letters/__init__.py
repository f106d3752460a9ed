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

from .letter import DeadLetter, escape_text, replay_headers
from .output import letter_line, listing_json, replay_json, replay_summary
from .selection import (
    DeadLetterError,
    KafkaUnavailable,
    NoneMatch,
    NothingSelected,
    NotReplayable,
    Selection,
    UnknownOffsets,
    error_text,
    parse_offset,
    parse_offsets,
)
from .topic import LIST_LIMIT_MAX, DeadLetterTopic, Listing, Replay, list_letters, replay_letters

__all__ = [
    "DeadLetter",
    "DeadLetterError",
    "DeadLetterTopic",
    "KafkaUnavailable",
    "LIST_LIMIT_MAX",
    "Listing",
    "NoneMatch",
    "NotReplayable",
    "NothingSelected",
    "Replay",
    "Selection",
    "UnknownOffsets",
    "error_text",
    "escape_text",
    "letter_line",
    "list_letters",
    "listing_json",
    "parse_offset",
    "parse_offsets",
    "replay_headers",
    "replay_json",
    "replay_letters",
    "replay_summary",
]
