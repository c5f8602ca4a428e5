"""The ``medattn3d`` command: thin entry points over the package's modules."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the exit status."""
    parser = argparse.ArgumentParser(prog="medattn3d", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("networks", help="build every network, run it on a random volume, print shapes and sizes")
    args = parser.parse_args(argv)
    if args.command == "networks":
        from medattn3d.summary import main as networks_summary

        networks_summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
