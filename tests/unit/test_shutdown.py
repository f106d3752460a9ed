"""Bounded shutdown (orderstream/shutdown.py): the batch in hand finishes, or the process exits
without committing it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from orderstream.shutdown import EXIT_UNFINISHED, run_to_completion


async def test_a_cancelled_caller_lets_the_work_finish_then_is_cancelled() -> None:
    finished = asyncio.Event()

    async def work() -> str:
        await asyncio.sleep(0.05)
        finished.set()
        return "stored"

    async def caller() -> str:
        return await run_to_completion(work())

    task = asyncio.ensure_future(caller())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set()


async def test_an_uncancelled_caller_gets_the_result() -> None:
    async def work() -> int:
        return 42

    assert await run_to_completion(work()) == 42


def test_a_stop_that_outlasts_the_deadline_exits_unfinished() -> None:
    script = (
        "import asyncio, time\n"
        "from orderstream.shutdown import arm_shutdown_deadline\n"
        "async def main():\n"
        "    arm_shutdown_deadline(asyncio.get_running_loop(), 0.2)\n"
        "    await asyncio.sleep(30)\n"
        "asyncio.run(main())\n"
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )

    assert result.returncode == EXIT_UNFINISHED, result.stderr
    assert time.monotonic() - started < 10
    assert "Shutdown took longer than 0.2 s" in result.stderr + result.stdout
