"""`python -m orderstream --version` and the `orderstream` script name orderstream's version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import faust

import orderstream


def test_version_is_orderstreams_not_fausts() -> None:
    expected = f"orderstream {orderstream.__version__} (faust-streaming {faust.__version__})"
    script = Path(sys.executable).parent / "orderstream"
    # A bad setting in the environment: printing the version builds no app and reads none.
    for command in ([sys.executable, "-m", "orderstream", "--version"], [str(script), "--version"]):
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "KAFKA_PARTITIONS": "zero"},
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == expected
