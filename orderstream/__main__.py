"""`python -m orderstream ...` is the Faust command line of this app."""

from __future__ import annotations

import sys

import faust
from faust.cli.faust import cli

import orderstream


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        # Faust's own --version names Faust's version; this command is orderstream's.
        print(f"orderstream {orderstream.__version__} (faust-streaming {faust.__version__})")
        return
    # Faust finds -A in sys.argv to import the app before it resolves a command; the app's
    # own commands (migrate, produce) exist once it is built, so build it first (the attribute
    # is lazy: reading it builds the app).
    _ = orderstream.app
    sys.exit(cli(["-A", "orderstream", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
