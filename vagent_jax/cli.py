"""The `vagent` command line: sft, rl, eval, demo, compile."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse the sub-command and run it."""
    parser = argparse.ArgumentParser(prog="vagent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="train a small tool-using agent from scratch on CPU")
    args = parser.parse_args(argv)
    print(f"vagent {args.command}: not wired yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
