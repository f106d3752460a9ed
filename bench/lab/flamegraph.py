"""py-spy profiles of a worker: collapsed stacks on disk and the top frames in the report."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

TOP = 12


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).is_file():
        raise RuntimeError(
            "--profile needs py-spy: pip install -e '.[bench]' (or pip install py-spy)"
        )
    return found


class Profile:
    """`py-spy record --format raw` of one process from start() to stop().

    The raw (collapsed-stack) file opens in https://www.speedscope.app or flamegraph.pl.
    """

    def __init__(self, pid: int, path: Path, rate: int = 100) -> None:
        self.pid = pid
        self.path = path
        self.rate = rate
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> Profile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                py_spy(),
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                str(self.rate),
                "--function",
                "--format",
                "raw",
                "--output",
                str(self.path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        return self

    def stop(self) -> dict[str, Any]:
        """Stop sampling (SIGINT makes py-spy write its file) and summarise the samples."""
        assert self._process is not None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
        _, err = self._process.communicate(timeout=60)
        if not self.path.is_file():
            raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace')}")
        return summarise(self.path)


def summarise(path: Path) -> dict[str, Any]:
    """Where the samples were: by package and by function at the top of the stack, and which of
    orderstream's functions were on it (inclusive)."""
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        packages[package_of(frames[-1])] += count
        # orderstream's own functions, without the process's entry point above them all.
        for frame in {
            f
            for f in frames
            if "(orderstream/" in f and "__main__" not in f and not f.startswith("<module>")
        }:
            ours[frame] += count

    def percent(counter: Counter[str]) -> dict[str, float]:
        return {key: round(100 * count / total, 1) for key, count in counter.most_common(TOP)}

    return {
        "file": path.name,
        "samples": total,
        "self_percent_by_package": percent(packages) if total else {},
        "self_percent": percent(own) if total else {},
        "orderstream_inclusive_percent": percent(ours) if total else {},
    }


def package_of(frame: str) -> str:
    """The top-level package (or module) of a frame's file.

    `Store._set (faust/stores/rocksdb.py:474)` -> `faust`;
    `select (selectors.py:451)` -> `selectors`.
    """
    location = frame.rpartition(" (")[2]
    return location.split("/", 1)[0].split(":", 1)[0].removesuffix(".py")
