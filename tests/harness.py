"""Test harness: worker processes, polling with deadlines, free ports."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Mapping, Optional, TypeVar

import aiohttp
import asyncpg

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[1]


async def eventually(check: Callable[[], Awaitable[Optional[T]]], *, timeout: float = 30.0,
                     interval: float = 0.1, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail with its last answer at the deadline."""
    deadline = time.monotonic() + timeout
    last: Optional[T] = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout:.0f}s; last answer: {last!r}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def admin_execute(url: str, statement: str) -> None:
    """Run one statement on a connection of its own (not the repository's pool)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def orderstream_command(*args: str, env: Mapping[str, str], timeout: float = 60
                        ) -> subprocess.CompletedProcess[str]:
    """Run `python -m orderstream ARGS` (the faust CLI of the app) to completion."""
    return subprocess.run([sys.executable, "-m", "orderstream", *args], env=dict(env),
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                          check=True)


@dataclass
class Worker:
    """One `faust -A orderstream worker` process with its own port, data dir and log."""

    env: dict[str, str]
    log_path: Path
    process: Optional[subprocess.Popen[bytes]] = None
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Worker":
        env = {**self.env, "HTTP_ADDR": f"127.0.0.1:{self.port}"}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "orderstream", "worker", "-l", "info"],
            env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    async def wait_serving(self, session: aiohttp.ClientSession, timeout: float = 90) -> None:
        """Wait until the web server answers (Faust starts it after table recovery)."""
        async def answers() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n"
                                     f"{self.log_tail()}")
            try:
                async with session.get(f"{self.url}/order/probe-{self.port}") as reply:
                    return reply.status in (200, 401, 404)  # 401: API_TOKENS set
            except aiohttp.ClientError:
                return False
        try:
            await eventually(answers, timeout=timeout, interval=0.2, what="worker serving")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait: the worker leaves its group and commits what it stored."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"worker ignored SIGTERM for {timeout}s:\n{self.log_tail()}")
        return self.process.returncode

    def kill(self) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
