"""What every benchmark report ends with (the command, the machine, the date) and where it is written."""

from __future__ import annotations

import os
import platform
import sys
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def footer(script: str, argv: list[str] | None) -> str:
    """The reproducing command of `benchmarks/<script>` with these arguments, this machine and today's date."""
    command = " ".join([f"benchmarks/{script}", *(argv if argv is not None else sys.argv[1:])])
    return (f"- Command: `.venv/bin/python {command}`\n"
            f"- Machine: {platform.processor() or platform.machine()} ({os.cpu_count()} cores), "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}\n"
            f"- Date: {date.today()}\n")


def publish(text: str, name: str, write: bool) -> None:
    """Print the report; with `write`, also to benchmarks/results/<name>."""
    print(text)
    if write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / name).write_text(text)
