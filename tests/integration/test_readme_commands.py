"""README's commands, run as written: `make run`, then the commands of its "Try it", "Producing
orders" and "HTTP API" sections in another shell, and `make run WORKERS=3`.

What a new user relies on: every command the README shows works verbatim on a fresh clone, so
the docs cannot rot. The commands are read from README.md itself (each line of a ```sh block in
those sections); `make run` runs with the defaults, as a user would run it: the shared stack,
port 8081, the topic `orders`, the group `order-svc` and the database of PG_URL's default.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from harness import REPO_ROOT

pytestmark = pytest.mark.timeout(420)

SECTIONS = ("Try it", "Producing orders", "HTTP API")
DEMO_ID = "b563feb7b2b84b6test"
PORTS = (8081, 8082, 8083)
START_DEADLINE = 150.0


def readme_commands(section: str) -> list[str]:
    """The lines of the ```sh blocks under the heading ``section`` (up to the next heading of
    the same or a higher level)."""
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    start = next(
        i for i, line in enumerate(lines) if re.fullmatch(rf"(#+) {re.escape(section)}", line)
    )
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    commands: list[str] = []
    in_block = False
    for line in lines[start + 1 :]:
        heading = re.match(r"(#+) ", line)
        if heading and not in_block and len(heading.group(1)) <= level:
            break
        if line.startswith("```"):
            in_block = line.strip() == "```sh" if not in_block else False
            continue
        if in_block and line.strip():
            commands.append(line)
    assert commands, f"no ```sh commands under '{section}' in README.md"
    return commands


def user_env() -> dict[str, str]:
    """The environment of a user's shell: no setting of the test run, and no .env file."""
    return {
        **{
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("KAFKA_", "PG_", "HTTP_", "DATA_DIR", "API_TOKENS"))
        },
        "ENV_FILE": "",
    }


def port_is_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def answers(url: str) -> bool:
    done = subprocess.run(["curl", "-fs", "-o", "/dev/null", url], timeout=10)
    return done.returncode == 0


class MakeRun:
    """`make run ARGS` in the background, stopped with Ctrl-C (SIGINT to its process group)."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                ["make", "run", *args],
                cwd=REPO_ROOT,
                env=user_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_until_running(self, ports: tuple[int, ...]) -> None:
        """Until run.sh says it is running and every worker answers the demo order."""
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"make run exited:\n{self.tail()}"
            if "Ctrl-C stops the workers" in self.log.read_text(errors="replace") and all(
                answers(f"http://127.0.0.1:{port}/order/{DEMO_ID}") for port in ports
            ):
                return
            time.sleep(1)
        raise AssertionError(f"make run not serving within {START_DEADLINE:.0f}s:\n{self.tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[type[MakeRun]]:
    busy = [port for port in PORTS if port_is_open(port)]
    assert not busy, (
        f"ports {busy} are in use (is `make run` running?): this test runs "
        "README's commands against its own `make run` on the default ports"
    )
    started: list[MakeRun] = []

    class Started(MakeRun):
        def __init__(self, log: Path, *args: str) -> None:
            super().__init__(log, *args)
            started.append(self)

    yield Started
    for run in started:
        run.stop()


def run_as_written(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=REPO_ROOT,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_readme_commands_run_as_written_against_make_run(
    make_run: type[MakeRun], tmp_path: Path
) -> None:
    run = make_run(tmp_path / "make-run.log")
    run.wait_until_running(PORTS[:1])

    for section in SECTIONS:
        for command in readme_commands(section):
            done = run_as_written(command)
            where = (
                f"README '{section}': {command}\n--- stdout\n{done.stdout[-2000:]}"
                f"\n--- stderr\n{done.stderr[-2000:]}"
            )
            assert done.returncode == 0, where
            assert "Traceback" not in done.stdout + done.stderr, where
            status = re.match(r"HTTP/1\.1 (\d+)", done.stdout)
            if status:
                assert status.group(1) == "200", where
            if command.startswith("curl -s "):
                assert "error" not in orjson.loads(done.stdout), where

    # What the commands did shows where the README says it does.
    recent = orjson.loads(
        run_as_written("curl -s 'http://localhost:8081/api/orders/recent?limit=3'").stdout
    )
    assert len(recent["orders"]) == 3
    listed = run_as_written(".venv/bin/faust -A orderstream dlq list --limit 5")
    assert "not_json" in listed.stdout, listed.stdout


def test_make_run_with_three_workers(make_run: type[MakeRun], tmp_path: Path) -> None:
    run = make_run(tmp_path / "make-run-3.log", "WORKERS=3")
    run.wait_until_running(PORTS)
    for port in PORTS:
        done = run_as_written(f"curl -si http://localhost:{port}/order/{DEMO_ID}")
        assert done.stdout.startswith("HTTP/1.1 200"), done.stdout[:500]
    assert all((REPO_ROOT / "orderstream-data" / f"worker-{i}").is_dir() for i in range(3))
