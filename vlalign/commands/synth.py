"""`vlalign synth <dataset>`: write a synthetic data set in a real benchmark's file layout.

Adding a data set: write `_add_<name>(datasets)` that declares its arguments and sets `func` to a runner that
calls the library generator and prints its summary with `_report`, then list it in `DATASETS`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any


def _report(summary: dict[str, Any]) -> int:
    print(json.dumps(summary, indent=2))
    return 0


def _run_refcoco(args: argparse.Namespace) -> int:
    from vlalign.synth.refcoco import generate_refcoco  # lazy: keeps `vlalign --help` fast

    summary = generate_refcoco(
        args.out,
        num_images=args.num_images,
        seed=args.seed,
        min_size=args.min_size,
        max_size=args.max_size,
        image_format=args.image_format,
    )
    return _report(summary)


def _add_refcoco(datasets: argparse._SubParsersAction) -> None:
    from vlalign import synth  # the defaults only: no numpy import until the command runs

    p = datasets.add_parser(
        "refcoco",
        help="referring image segmentation in the refer layout (refs(unc).p, instances.json, images/)",
        description="Coloured shapes with referring expressions that each select exactly one object. The "
        "defaults define the project's default benchmark. testA targets are round shapes, testB angular "
        "ones.",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num-images", type=int, default=synth.DEFAULT_NUM_IMAGES, help="(default: %(default)s)")
    p.add_argument("--seed", type=int, default=synth.DEFAULT_SEED, help="(default: %(default)s)")
    p.add_argument(
        "--min-size",
        type=int,
        default=synth.DEFAULT_MIN_SIZE,
        help="smallest image side, px (default: %(default)s)",
    )
    p.add_argument(
        "--max-size",
        type=int,
        default=synth.DEFAULT_MAX_SIZE,
        help="largest image side, px (default: %(default)s)",
    )
    p.add_argument("--image-format", choices=("jpg", "png"), default="jpg")
    p.set_defaults(func=_run_refcoco)


# The re-id generators' defaults, repeated here so that building the parser imports no numpy; a test checks
# that they match vlalign.synth.sysu / vlalign.synth.regdb.
REID_DEFAULTS = {"sysu": {"num_ids": 300, "seed": 0}, "regdb": {"num_ids": 412, "seed": 0}}


def _run_reid(args: argparse.Namespace) -> int:
    if args.dataset == "sysu":
        from vlalign.synth.sysu import generate_sysu as generate
    else:
        from vlalign.synth.regdb import generate_regdb as generate
    return _report(generate(args.out, num_ids=args.num_ids, seed=args.seed))


def _add_reid(datasets: argparse._SubParsersAction, name: str, summary: str, description: str) -> None:
    p = datasets.add_parser(name, help=summary, description=description)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--num-ids", type=int, default=REID_DEFAULTS[name]["num_ids"], help="identities (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=REID_DEFAULTS[name]["seed"], help="(default: %(default)s)")
    p.set_defaults(func=_run_reid)


def _add_sysu(datasets: argparse._SubParsersAction) -> None:
    _add_reid(
        datasets,
        "sysu",
        summary="visible-infrared re-id in the SYSU-MM01 layout (cam1..6/<pid>/<img>.jpg, exp/*_id.txt)",
        description="Synthetic people seen by four visible and two near-infrared cameras, with the split files "
        "and an official-structure rand_perm_cam.mat (when SciPy is installed).",
    )


def _add_regdb(datasets: argparse._SubParsersAction) -> None:
    _add_reid(
        datasets,
        "regdb",
        summary="visible-thermal re-id in the RegDB layout (Visible/, Thermal/, idx/*_{1..10}.txt)",
        description="Synthetic people seen by an aligned visible + far-infrared camera pair, 10 images each, "
        "with the 10 trials' index files.",
    )


DATASETS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_add_refcoco, _add_sysu, _add_regdb)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("synth", help="write synthetic data sets in the real benchmarks' layouts")
    datasets = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    for add in DATASETS:
        add(datasets)
