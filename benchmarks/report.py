"""What every benchmark report ends with (the command, the machine, the date) and where it is written."""

from __future__ import annotations

import json
import os
import platform
import subprocess
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


def speed_args(p, argv: list[str] | None, smoke: dict):
    """Add --smoke / --write to a speed script's parser, parse, and set up torch: `--smoke` applies the small
    numbers in `smoke` and is never published; threads from `args.threads`, flush-to-zero on."""
    import torch

    p.add_argument("--smoke", action="store_true", help=f"small numbers: {smoke}")
    p.add_argument("--write", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        if args.write:
            p.error("--smoke numbers are not published; drop --write")
        vars(args).update(smoke)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # before the first parallel op (shared/docs/performance.md)
    return args


def publish(text: str, name: str, write: bool) -> None:
    """Print the report; with `write`, also to benchmarks/results/<name>."""
    print(text)
    if write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / name).write_text(text)


def train_once(run: Path, cli_args: list[str], force: bool = False) -> dict:
    """`vlalign <cli_args> --out RUN` unless RUN/results.json exists (`force` retrains); an interrupted run
    (RUN/checkpoints present) continues exactly with --resume. Returns RUN/results.json."""
    if (run / "results.json").is_file() and not force:
        print(f"{run.name}: reusing {run / 'results.json'}")
    else:
        cmd = [sys.executable, "-m", "vlalign.cli", *cli_args, "--out", str(run)]
        if (run / "checkpoints").exists():
            cmd.append("--resume")
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return json.loads((run / "results.json").read_text())
