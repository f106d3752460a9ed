"""Secrets the tests hand to workers, checked against every log the suite writes.

A test that gives a process a password or token registers it (``register_secret("...")``);
at the end of the session conftest.py reads every ``*.log`` under pytest's base temporary
directory (worker logs, private stacks' logs) and fails the run if one of them holds a
registered secret. Register only distinctive values (say, with a uuid in them): a short
common word would be found by chance.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

MIN_LENGTH = 8
_REGISTERED: set[str] = set()


def register_secret(secret: str) -> str:
    """Remember ``secret`` for the end-of-session check; returns it, to use inline."""
    if len(secret) < MIN_LENGTH:
        raise ValueError(
            f"a registered secret needs {MIN_LENGTH}+ characters to be found only where it leaked"
        )
    _REGISTERED.add(secret)
    return secret


def registered_secrets() -> frozenset[str]:
    return frozenset(_REGISTERED)


def leaks_in(
    directory: Path, secrets: Iterable[str], pattern: str = "*.log"
) -> list[tuple[Path, int, str]]:
    """Every (file, line number, secret) where a secret occurs in a file under ``directory``.

    Files are read as bytes: a log with broken UTF-8 is searched all the same.
    """
    needles = [(secret, secret.encode()) for secret in secrets]
    found = []
    for path in sorted(directory.rglob(pattern)):
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_bytes().splitlines(), start=1):
            found += [(path, number, secret) for secret, needle in needles if needle in line]
    return found
