"""README's Performance figures are the committed results of one bench run (bench/readme.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from bench import readme
from bench.report import DEFAULT_RESULTS_DIR, latest_result
from harness import REPO_ROOT


def test_readme_figures_are_the_latest_results_of_one_run() -> None:
    """`make bench` rewrites the block; a hand edit or results of another run fail here."""
    text = (REPO_ROOT / "README.md").read_text()
    assert readme.block_in(text) == readme.render(DEFAULT_RESULTS_DIR)


def test_the_figures_come_from_one_run_of_the_chart_too() -> None:
    _, chart = latest_result(DEFAULT_RESULTS_DIR, "chart")
    _, ingest = latest_result(DEFAULT_RESULTS_DIR, "ingest")
    _, lookup = latest_result(DEFAULT_RESULTS_DIR, "lookup")
    assert chart["parameters"] == {
        "lookup": f"{lookup['started_at'][:10]}-lookup.json",
        "ingest": f"{ingest['started_at'][:10]}-ingest.json",
    }


def test_results_of_different_runs_are_refused(tmp_path: Path) -> None:
    for part in readme.PARTS:
        shutil.copy(latest_result(DEFAULT_RESULTS_DIR, part)[0], tmp_path)
    readme.render(tmp_path)  # one run: fine
    path, result = latest_result(tmp_path, "memory")
    path.write_bytes(orjson.dumps({**result, "run": "2000-01-01T00:00:00+00:00"}))
    with pytest.raises(readme.NotOneRun, match="memory 2000-01-01"):
        readme.render(tmp_path)


def test_only_the_block_is_replaced() -> None:
    text = f"before\n{readme.BEGIN}\nold figures\n{readme.END}\nafter\n"
    assert (
        readme.replace_block(text, "new") == f"before\n{readme.BEGIN}\nnew\n{readme.END}\nafter\n"
    )
    with pytest.raises(ValueError, match="no block"):
        readme.replace_block("no markers here", "new")
