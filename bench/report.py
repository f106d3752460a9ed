"""What every result records (machine, versions, parameters) and how it is shown and saved."""

from __future__ import annotations

import os
import platform
import subprocess
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import orjson

REPO_ROOT = Path(__file__).resolve().parents[1]
KAFKA_POM = REPO_ROOT / "scripts" / "kafka" / "pom.xml"
DEFAULT_RESULTS_DIR = REPO_ROOT / "bench" / "results"
PACKAGES = ("faust-streaming", "aiokafka", "asyncpg", "aiohttp", "orjson", "rocksdict")


def machine() -> dict[str, Any]:
    """Cores, memory and load of this machine: the figures mean little without them."""
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    cpu_models = [
        line.split(":", 1)[1].strip()
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.startswith("model name")
    ]
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu": cpu_models[0] if cpu_models else platform.processor(),
        "memory_bytes": int(meminfo["MemTotal"].split()[0]) * 1024,
        "kernel": platform.release(),
        "load_average": list(os.getloadavg()),
    }


def kafka_version() -> str:
    """The Kafka release the local stack runs: scripts/kafka/pom.xml's kafka.version."""
    found = ElementTree.parse(KAFKA_POM).getroot().find("{*}properties/{*}kafka.version")
    return found.text if found is not None and found.text else "unknown"


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "kafka": kafka_version()}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str:
    """HEAD, with `+dirty` when the working tree has changes: which code was measured."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


@dataclass
class Report:
    """One part's record: parameters in, results out, with the context to judge them."""

    part: str
    parameters: dict[str, Any]
    versions: dict[str, str] = field(default_factory=package_versions)
    results: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    machine_at_start: dict[str, Any] = field(default_factory=machine)
    # The run of `python -m bench` this part belongs to (its start time): README's figures
    # must all come from one run (bench/readme.py).
    run: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "part": self.part,
            "run": self.run,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "duration_s": round(time.monotonic() - self.started, 1),
            "commit": git_commit(),
            "machine": {**self.machine_at_start, "load_average_at_end": list(os.getloadavg())},
            "versions": self.versions,
            "parameters": self.parameters,
            "results": self.results,
            "notes": self.notes,
        }

    def save(self, results_dir: Path) -> Path:
        """Write `<results_dir>/<YYYY-MM-DD>-<part>.json`; a later run the same day replaces it."""
        results_dir.mkdir(parents=True, exist_ok=True)
        path = results_dir / f"{date.today().isoformat()}-{self.part}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_bytes(orjson.dumps(self.as_dict(), option=orjson.OPT_INDENT_2) + b"\n")
        tmp.replace(path)
        return path


def latest_result(results_dir: Path, part: str) -> tuple[Path, dict[str, Any]]:
    """The newest `<date>-<part>.json` in ``results_dir``."""
    found = sorted(results_dir.glob(f"????-??-??-{part}.json"))
    if not found:
        raise FileNotFoundError(f"no {part} results in {results_dir}: run `python -m bench {part}`")
    return found[-1], orjson.loads(found[-1].read_bytes())


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table, numbers right-aligned."""
    cells = [[fmt(value) for value in row] for row in rows]
    widths = [max(len(str(h)), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str], numeric: Sequence[bool]) -> str:
        return "  ".join(
            v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)
        ).rstrip()

    numeric = [
        all(isinstance(row[i], (int, float)) or row[i] is None for row in rows) and bool(rows)
        for i in range(len(headers))
    ]
    return "\n".join(
        [
            line(list(headers), numeric),
            line(["-" * w for w in widths], numeric),
            *(line(row, numeric) for row in cells),
        ]
    )


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def show(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], notes: Sequence[str] = ()
) -> None:
    print(f"\n== {title} ==")
    print(table(headers, rows))
    for note in notes:
        print(f"  * {note}")
