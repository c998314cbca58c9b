"""`vlalign score <benchmark>`: score saved predictions offline against a benchmark's ground truth.

Adding a benchmark: write `_add_<name>(benchmarks)` that declares its arguments, calls `_add_output_args` and
sets `func` to a runner returning `_report(title, result, args)`, then list it in `BENCHMARKS`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _add_output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", required=True, metavar="OUT.json", help="where to write the metrics (JSON)")


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write `obj` as JSON to `path` via a temporary file in the same folder: no reader sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def format_table(title: str, result: dict[str, Any]) -> str:
    """Float metrics (fractions) as percentages, one per line, then the other fields on one line."""
    metrics = {k: v for k, v in result.items() if isinstance(v, float)}
    width = max(map(len, metrics), default=6)
    lines = [title, f"  {'metric':<{width}}  value (%)"]
    lines += [f"  {k:<{width}}  {100 * v:9.2f}" for k, v in metrics.items()]
    lines.append("  " + ", ".join(f"{k}={v}" for k, v in result.items() if k not in metrics))
    return "\n".join(lines)


def _report(title: str, result: dict[str, Any], args: argparse.Namespace) -> int:
    print(format_table(title, result))
    write_json_atomic(args.json, result)
    print(f"wrote {args.json}")
    return 0


def _run_refseg(args: argparse.Namespace) -> int:
    from vlalign.metrics.refseg import score_predictions  # lazy: keeps `vlalign --help` fast

    result = score_predictions(args.data, args.split, args.pred, split_by=args.split_by)
    return _report(f"refseg: {args.data} {args.split} ({args.split_by})", result, args)


def _add_refseg(benchmarks: argparse._SubParsersAction) -> None:
    p = benchmarks.add_parser(
        "refseg",
        help="referring image segmentation (RefCOCO, RefCOCO+, RefCOCOg): mIoU, oIoU, prec@X",
        description="Score one binary PNG per sentence, <sent_id>.png at the original image size (nonzero = "
        "foreground; modes 1, L, P by palette index, RGB), at the original resolution.",
    )
    p.add_argument("--data", required=True, help="refer-format folder: refs(<split_by>).p, instances.json")
    p.add_argument("--split", required=True, help="e.g. val, testA, testB, test")
    p.add_argument("--pred", required=True, help="folder of <sent_id>.png predictions")
    p.add_argument("--split-by", default="unc", help="refs file to read: unc, umd or google (default: unc)")
    _add_output_args(p)
    p.set_defaults(func=_run_refseg)


def _run_davis(args: argparse.Namespace) -> int:
    from vlalign.metrics.vos_score import score_davis, write_davis_csvs

    result, rows = score_davis(args.gt, args.pred, task=args.task)
    csv_dir = args.csv_dir if args.csv_dir is not None else Path(args.json).parent
    for path in write_davis_csvs(csv_dir, result, rows, subset=args.set):
        print(f"wrote {path}")
    return _report(f"davis ({args.task}): {args.pred}", result, args)


def _add_davis(benchmarks: argparse._SubParsersAction) -> None:
    p = benchmarks.add_parser(
        "davis",
        help="DAVIS-2017 / Ref-DAVIS17 folders: J&F, J and F mean / recall / decay (official protocol)",
        description="Score <sequence>/<frame>.png label maps (palette index = object id, 0 background; 255 = void "
        "in the ground truth) with the official davis2017-evaluation protocol. Ref-DAVIS17: score each annotator's "
        "folder (unsupervised task) and average the four results.",
    )
    p.add_argument("--gt", required=True, help="ground-truth folder of <sequence>/<frame>.png (e.g. "
                   "Annotations_unsupervised/480p)")  # fmt: skip
    p.add_argument("--pred", required=True, help="prediction folder in the same layout")
    p.add_argument(
        "--task",
        choices=("unsupervised", "semi-supervised"),
        default="unsupervised",
        help="unsupervised: Hungarian matching of predicted ids to objects (Ref-DAVIS17); "
        "semi-supervised: ids must match, first and last frames not scored (default: unsupervised)",
    )
    p.add_argument("--csv-dir", default=None, help="where to write the official CSV tables (default: the folder "
                   "of --json)")  # fmt: skip
    p.add_argument("--set", default="val", help="subset name used in the CSV file names (default: val)")
    _add_output_args(p)
    p.set_defaults(func=_run_davis)


def _run_ytvos(args: argparse.Namespace) -> int:
    from vlalign.metrics.vos_score import score_ytvos, write_davis_csvs

    result, rows = score_ytvos(args.gt, args.pred)
    if args.csv_dir is not None:
        for path in write_davis_csvs(args.csv_dir, result, rows, subset=args.set):
            print(f"wrote {path}")
    return _report(f"ytvos: {args.pred}", result, args)


def _add_ytvos(benchmarks: argparse._SubParsersAction) -> None:
    p = benchmarks.add_parser(
        "ytvos",
        help="Ref-YouTube-VOS submissions scored offline against ground truth: J&F per expression, averaged",
        description="Score Annotations/<video>/<exp_id>/<frame>.png binary masks (nonzero = object) against "
        "ground truth in the same layout: J and F per frame, DAVIS statistics per expression, mean over "
        "expressions.",
    )
    p.add_argument("--gt", required=True, help="ground-truth folder (holding Annotations/ or being it)")
    p.add_argument("--pred", required=True, help="submission folder (holding Annotations/ or being it)")
    p.add_argument("--csv-dir", default=None, help="also write DAVIS-style CSV tables here (rows per expression)")
    p.add_argument("--set", default="valid", help="subset name used in the CSV file names (default: valid)")
    _add_output_args(p)
    p.set_defaults(func=_run_ytvos)


BENCHMARKS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_add_refseg, _add_davis, _add_ytvos)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("score", help="score saved predictions offline against ground truth")
    benchmarks = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for add in BENCHMARKS:
        add(benchmarks)
