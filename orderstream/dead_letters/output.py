"""What `dlq` prints and the HTTP API answers: lines for a terminal, JSON bodies."""

from __future__ import annotations

from typing import Any

from .letter import PREVIEW_CHARS, DeadLetter, escape_text, header_text
from .topic import Listing, Replay


def letter_line(letter: DeadLetter) -> str:
    """One line of `dlq list`: position, reason, error, order_uid, source, preview."""
    source = letter.source
    parts = [
        f"offset={letter.offset}",
        f"partition={letter.partition}",
        letter.time,
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


def replay_summary(replay: Replay) -> list[str]:
    """Lines for the CLI: one per replayed letter, one per skipped one, then the count."""
    lines = []
    for item in replay.replayed:
        letter = item.letter
        where = (
            f"{item.topic}"
            if item.partition is None
            else f"{item.topic}:{item.partition}:{item.offset}"
        )
        lines.append(
            f"{'would replay' if replay.dry_run else 'replayed'} "
            f"{letter.partition}:{letter.offset} ({letter.reason}, order_uid "
            f"{letter.order_uid or '-'}) -> {where}"
        )
    for skip in replay.skipped:
        lines.append(f"skipped {skip.letter.partition}:{skip.letter.offset}: {skip.why}")
    verb = "would replay" if replay.dry_run else "replayed"
    lines.append(
        f"{verb} {len(replay.replayed)} dead letter(s)"
        + (f", skipped {len(replay.skipped)}" if replay.skipped else "")
    )
    return lines


def listing_json(listing: Listing) -> dict[str, Any]:
    return {
        "topic": listing.topic,
        "total": listing.total,
        "dead_letters": [letter.as_json() for letter in listing.letters],
    }


def replay_json(replay: Replay) -> dict[str, Any]:
    return {
        "dry_run": replay.dry_run,
        "count": len(replay.replayed),
        "replayed": [
            {
                "partition": item.letter.partition,
                "offset": item.letter.offset,
                "to": {"topic": item.topic, "partition": item.partition, "offset": item.offset},
            }
            for item in replay.replayed
        ],
        "skipped": [
            {"partition": skip.letter.partition, "offset": skip.letter.offset, "why": skip.why}
            for skip in replay.skipped
        ],
    }
