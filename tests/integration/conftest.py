"""Fixtures of the integration tests alone."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orderstream.migrations import migrate_database

from ..browser import browsers
from ..conftest import SQL_DIR
from ..private_stack import PrivateStack

# Registered here for the page's browser tests, which take it as a parameter.
__all__ = ["browsers", "own_database"]


@pytest.fixture
async def own_database(tmp_path: Path) -> AsyncIterator[PrivateStack]:
    """A PostgreSQL server of the test's own, migrated, that the test may stop and restart.

    Never the shared stack's: test files run in parallel processes (make test), and stopping
    the shared PostgreSQL would fail the tests of the other process.
    """
    stack = PrivateStack(tmp_path / "stack")
    await asyncio.to_thread(stack.pg_up)
    try:
        await asyncio.to_thread(migrate_database, stack.pg_url, SQL_DIR)
        yield stack
    finally:
        await asyncio.to_thread(stack.down)
