"""orderstream: Kafka -> PostgreSQL -> Faust Table cache -> HTTP, on faust-streaming.

``orderstream.app`` (what `faust -A orderstream` looks for) is built from the environment the
first time it is asked for, by create_app(load_settings()) in app.py. Importing the package or
any module of it builds nothing and reads no environment; nothing connects anywhere until the
worker starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import OrderApp

    app: OrderApp

__version__ = "0.1.0"

__all__ = ["app", "__version__"]


def __getattr__(name: str) -> Any:
    """Build the app of the environment's settings on first use of ``orderstream.app``."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .app import create_app, load_settings  # the import binds the module to .app ...

    built = create_app(load_settings())
    globals()["app"] = built  # ... which the app replaces, as faust -A expects
    return built
