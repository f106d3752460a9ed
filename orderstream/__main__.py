"""`python -m orderstream ...` is the Faust command line of this app."""

from __future__ import annotations

import sys

from faust.cli.faust import cli


def main() -> None:
    sys.exit(cli(["-A", "orderstream", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
