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


# The video generator's defaults, repeated here (no numpy import while building the parser); a test checks that
# they match vlalign.synth.ytvos.
YTVOS_DEFAULTS = {"num_videos": 350, "seed": 0, "width": 160, "height": 120, "min_frames": 12, "max_frames": 20}


def _run_ytvos(args: argparse.Namespace) -> int:
    from vlalign.synth.ytvos import generate_ytvos

    summary = generate_ytvos(args.out, num_videos=args.num_videos, seed=args.seed, width=args.width,
                             height=args.height, frames=(args.min_frames, args.max_frames))  # fmt: skip
    return _report(summary)


def _add_ytvos(datasets: argparse._SubParsersAction) -> None:
    p = datasets.add_parser(
        "ytvos",
        help="referring video segmentation in the Ref-YouTube-VOS layout (meta_expressions/, JPEGImages/, "
        "Annotations/)",
        description="Moving shapes (left, right, up, down, still, rotating, growing, shrinking) with expressions "
        "that each select one object in every frame; most can only be resolved from motion (objects of identical "
        "appearance that differ only in how they move). Splits train / valid / test (test videos listed in "
        "meta_expressions/test, without ground truth); valid has Annotations, and its ground truth in the "
        "submission layout under valid_gt/ for `vlalign score ytvos`. Per-expression metadata: synth_info.json.",
    )
    d = YTVOS_DEFAULTS
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num-videos", type=int, default=d["num_videos"],
                   help="videos over all splits, ~83%% train, 14%% valid, 3%% test (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d["seed"], help="(default: %(default)s)")
    p.add_argument("--width", type=int, default=d["width"], help="frame width, px (default: %(default)s)")
    p.add_argument("--height", type=int, default=d["height"], help="frame height, px (default: %(default)s)")
    p.add_argument("--min-frames", type=int, default=d["min_frames"], help="frames per video, at least "
                   "(default: %(default)s)")
    p.add_argument("--max-frames", type=int, default=d["max_frames"], help="frames per video, at most "
                   "(default: %(default)s)")  # fmt: skip
    p.set_defaults(func=_run_ytvos)


DATASETS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_refcoco, _add_sysu, _add_regdb, _add_ytvos,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("synth", help="write synthetic data sets in the real benchmarks' layouts")
    datasets = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    for add in DATASETS:
        add(datasets)
