"""./.env: the service and make's scripts read it, under the real environment.

What a user relies on: a value in ./.env is used when the environment does not set it, the
environment wins when it does, a bad value in the file stops start-up naming the variable, and
the service (python-dotenv) and the scripts make runs (scripts/dotenv.sh) read a file alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harness import REPO_ROOT

SHOW_SETTINGS = (
    "from orderstream.app import load_settings; s = load_settings(); "
    "print(s.kafka_topic, s.dead_letter_topic, s.kafka_group_id)"
)
ENV_FILE = """\
# a comment
KAFKA_TOPIC=from-file
export DLQ_TOPIC="quoted-dead-letters"  # a comment after a quoted value
KAFKA_GROUP_ID = spaced-group # a comment
"""


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the settings the file sets (the test's own shell may have them)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("KAFKA_TOPIC", "DLQ_TOPIC", "KAFKA_GROUP_ID", "ENV_FILE")
    }
    return {**env, **extra}


def settings_in(directory: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SHOW_SETTINGS],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_service_reads_dotenv_under_the_environment(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(ENV_FILE)

    from_file = settings_in(tmp_path, clean_env())
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout.split(maxsplit=1) == ["from-file", "quoted-dead-letters spaced-group\n"]

    env_wins = settings_in(tmp_path, clean_env(KAFKA_TOPIC="from-env"))
    assert env_wins.stdout.startswith("from-env quoted-dead-letters spaced-group"), env_wins

    nothing = settings_in(tmp_path, clean_env(ENV_FILE=""))
    assert nothing.stdout == "orders orders.dlq order-svc\n", nothing  # the defaults


def test_env_file_names_another_file_and_a_bad_value_there_names_the_variable(
    tmp_path: Path,
) -> None:
    other = tmp_path / "conf" / "orderstream.env"
    other.parent.mkdir()
    other.write_text("KAFKA_PARTITIONS=zero\n")
    done = settings_in(tmp_path, clean_env(ENV_FILE=str(other)))
    assert done.returncode != 0
    assert "KAFKA_PARTITIONS" in done.stderr and "zero" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_the_scripts_read_the_file_as_the_service_does(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        ENV_FILE + "WORKERS='3'\nEMPTY=\nNOTE=\"two words # not a comment\"\n"
    )
    names = ["KAFKA_TOPIC", "DLQ_TOPIC", "KAFKA_GROUP_ID", "WORKERS", "EMPTY", "NOTE"]
    script = f"source {REPO_ROOT / 'scripts' / 'dotenv.sh'}; load_env_file; " + "; ".join(
        f'printf "%s\\0" "${{{name}-unset}}"' for name in names
    )
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=clean_env(KAFKA_GROUP_ID="from-env"),
        timeout=30,
        check=True,
    )
    # Every value ends with a NUL, so the split has one empty item more than there are names.
    by_script = dict(zip(names, done.stdout.split("\0"), strict=False))

    service = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, os; from orderstream.config import load_env_file; load_env_file(); "
            f"print(json.dumps({{n: os.environ.get(n, 'unset') for n in {names}}}))",
        ],
        cwd=tmp_path,
        env=clean_env(KAFKA_GROUP_ID="from-env"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert by_script == json.loads(service.stdout)
    assert by_script["KAFKA_GROUP_ID"] == "from-env" and by_script["WORKERS"] == "3"
