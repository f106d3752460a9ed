"""The build step setup.cfg cannot declare: web/, sql/ and openapi.yaml stay at the top of the
repository, and a built package carries a copy of them in orderstream/_assets/, where
orderstream/config.py finds them with importlib.resources (README "Dependencies and packaging").

An editable install (`make setup`) copies nothing: config.py then falls back to the checkout's
top-level files, so an edit to web/ or sql/ shows without reinstalling.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# What the package reads at run time, by its path at the top of the repository.
ASSETS = ("web", "sql", "openapi.yaml")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


class BuildPyWithAssets(build_py):
    """build_py, then copy ASSETS into <build_lib>/orderstream/_assets/."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "orderstream" / "_assets"
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for name in ASSETS:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, target / name, ignore=IGNORED)
            else:
                shutil.copy2(source, target / name)


setup(cmdclass={"build_py": BuildPyWithAssets})
