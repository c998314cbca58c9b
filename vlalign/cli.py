"""The `vlalign` command: a thin layer over the library (the library itself has no argparse).

Each area adds its sub-commands from `vlalign/commands/<area>.py`, a module exposing
`register(subparsers)`; every sub-parser sets `func(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# area modules under vlalign.commands; imported lazily so `vlalign --help` stays fast.
COMMAND_MODULES = ("synth", "score", "models", "demo", "reid", "rvos", "serve", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlalign", description="Align language with vision.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"vlalign.commands.{name}")
        except ModuleNotFoundError as e:  # an area not written yet
            if e.name == f"vlalign.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, FileExistsError, ValueError, KeyError) as e:
        # Library errors carry the file, field and expectation; print them without a traceback.
        if getattr(args, "debug", False):
            raise
        print(f"vlalign {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
