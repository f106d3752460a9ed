"""orderstream: Kafka -> PostgreSQL -> Faust Table cache -> HTTP, on faust-streaming.

Importing the package builds the Faust app (for `faust -A orderstream`) and registers its
agents, pages and commands; nothing connects anywhere until the worker starts.
"""

__version__ = "0.1.0"

from .app import app  # noqa: E402

from . import agents, commands, health, tables, views  # noqa: E402,F401

__all__ = ["app", "__version__"]
