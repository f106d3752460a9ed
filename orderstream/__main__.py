"""`python -m orderstream ...` is the Faust command line of this app."""

from __future__ import annotations

import sys

from faust.cli.faust import cli

import orderstream


def main() -> None:
    # Faust finds -A in sys.argv to import the app before it resolves a command; the app's
    # own commands (migrate, produce) exist once it is built, so build it first.
    orderstream.app
    sys.exit(cli(["-A", "orderstream", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
