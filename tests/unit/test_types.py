"""The package and the benchmarks type-check: mypy with setup.cfg's [mypy] settings."""

import subprocess
import sys

from harness import REPO_ROOT


def test_mypy_finds_no_errors() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "orderstream", "bench"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert result.returncode == 0, result.stdout + result.stderr
