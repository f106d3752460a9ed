"""Bounded shutdown: finish the batch in hand, or exit without committing it.

The agent acks a batch's events only once the batch is stored and cached, and Faust commits
acked offsets while stopping. So the batch in hand runs to completion even when the worker
is asked to stop (a clean hand-over, nothing consumed twice); when it cannot complete in
time, or a bug breaks it, the process exits at once with EXIT_UNFINISHED and the batch,
never acked, is consumed again after the restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable
from typing import NoReturn, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

# EX_TEMPFAIL: the work in hand was not finished; a restart will redo it.
EXIT_UNFINISHED = 75


def exit_unfinished(reason: str) -> NoReturn:
    """Leave now, committing nothing; log why (with the traceback when handling one)."""
    logger.critical(
        "%s: exiting without committing the batch in hand; it will be consumed again",
        reason,
        exc_info=sys.exc_info()[0] is not None,
    )
    logging.shutdown()
    os._exit(EXIT_UNFINISHED)


async def run_to_completion(work: Awaitable[T]) -> T:
    """Await ``work`` to its end even when the caller is cancelled, then pass the cancel on."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True
            logger.info("Stop requested: finishing the batch in hand first")
    if cancelled:
        raise asyncio.CancelledError()
    return result


def arm_shutdown_deadline(loop: asyncio.AbstractEventLoop, timeout: float) -> None:
    """Once stopping starts, a second SIGTERM/SIGINT or ``timeout`` seconds end the process."""
    timer = threading.Timer(
        timeout, exit_unfinished, args=(f"Shutdown took longer than {timeout:g} s",)
    )
    timer.daemon = True
    timer.start()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, exit_unfinished, f"Second {signal.Signals(signum).name}")
