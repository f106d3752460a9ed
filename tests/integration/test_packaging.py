"""The package the image installs: built as a wheel from the files the Dockerfile copies, it
carries web/, sql/ and openapi.yaml and finds them without any *_DIR setting.

The build fetches the pinned build backend (pyproject.toml) from the package index, as
`docker build` does; pip's cache makes later runs quick.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness import REPO_ROOT
from orderstream.config import Settings

from .test_docker import stages, without_flags

ASSETS = ("web", "sql", "openapi.yaml")
# Environment of the installed package's checks: none of the settings that would hide a fault.
CLEAN_ENV = {
    name: value
    for name, value in os.environ.items()
    if name not in ("WEB_DIR", "SQL_DIR", "OPENAPI_FILE", "PYTHONPATH")
}


def files_under(path: Path) -> dict[str, bytes]:
    """{relative path: content} of a file, or of every file under a directory."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {
        str(file.relative_to(path)): file.read_bytes()
        for file in sorted(path.rglob("*"))
        if file.is_file() and "__pycache__" not in file.parts
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of exactly what the Dockerfile's build stage copies."""
    source = tmp_path_factory.mktemp("context")
    for keyword, args in stages()["build"]:
        if keyword != "COPY" or "--from=" in args:
            continue
        *names, _destination = without_flags(args)
        for name in names:
            origin = REPO_ROOT / name
            if origin.is_dir():
                shutil.copytree(
                    origin, source / name.rstrip("/"), ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy2(origin, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(out),
            str(source),
        ],
        check=True,
        cwd=source,
        timeout=240,
    )
    (built,) = out.glob("orderstream-*.whl")
    return built


def test_wheel_carries_the_page_the_migrations_and_the_api_description(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name in ASSETS:
            expected = files_under(REPO_ROOT / name)
            for relative, content in expected.items():
                member = "/".join(filter(None, ["orderstream/_assets", name, relative]))
                assert member in names, f"{member} is not in {wheel.name}"
                assert archive.read(member) == content, f"{member} differs from {name}"
    # Nothing of the checkout besides: no tests, no scripts, no top-level web/ or sql/.
    assert all(name.startswith(("orderstream/", "orderstream-")) for name in names), sorted(
        name for name in names if not name.startswith("orderstream")
    )


def test_installed_wheel_finds_its_files_without_settings(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        timeout=120,
    )
    # Far from the checkout, with the installed copy first on the path (the venv's editable
    # install of the checkout comes after it).
    script = (
        "import json, orderstream; from orderstream.config import Settings; s = Settings();"
        " print(json.dumps([orderstream.__file__, str(s.web_dir), str(s.sql_dir),"
        " str(s.openapi_file)]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        env={**CLEAN_ENV, "PYTHONPATH": str(target), "ENV_FILE": ""},
    )
    module, web_dir, sql_dir, openapi_file = map(Path, json.loads(result.stdout))
    assets = target / "orderstream" / "_assets"
    assert module == target / "orderstream" / "__init__.py"
    assert (web_dir, sql_dir, openapi_file) == (
        assets / "web",
        assets / "sql",
        assets / "openapi.yaml",
    )
    assert (web_dir / "index.html").is_file() and openapi_file.is_file()
    assert sorted(path.name for path in sql_dir.glob("[0-9]*.sql")) == sorted(
        path.name for path in (REPO_ROOT / "sql").glob("[0-9]*.sql")
    )


def test_editable_install_reads_the_checkout() -> None:
    """`make setup`'s editable install copies nothing: an edit to web/ or sql/ shows at once."""
    settings = Settings()
    assert (settings.web_dir, settings.sql_dir, settings.openapi_file) == (
        REPO_ROOT / "web",
        REPO_ROOT / "sql",
        REPO_ROOT / "openapi.yaml",
    )
    assert not (REPO_ROOT / "orderstream" / "_assets").exists()
