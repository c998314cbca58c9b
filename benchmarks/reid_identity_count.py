"""Does the re-id model need more training identities? Models trained on sets of different sizes, scored on the
same new people.

The synthetic generator draws identity `pid`'s appearance and images from (seed, pid) alone, so a set of 1,200
identities contains the default set's 300 people and 900 more. This script draws `--num` identities (fixed
seed) from the big set's *test* split whose pid is above `--unseen-above` (the default set's size): neither a
model trained on the default set nor one trained on the big set has seen them. Every model is scored on them
with the SYSU all-search single-shot protocol (seeded galleries), the same galleries for every model, so the
Rank-1 are comparable; the gallery holds as many identities as the default benchmark's.

    .venv/bin/vlalign synth sysu --out runs/bench/sysu1200 --num-ids 1200
    .venv/bin/python benchmarks/learning_reid.py --data runs/bench/sysu1200 --num-ids 1200 --variants full \\
        --out runs/exp/reid1200 --trials 3
    .venv/bin/python benchmarks/reid_identity_count.py --data runs/bench/sysu1200 \\
        --weights runs/exp/reid/full/model runs/exp/reid1200/full/model
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vlalign.data.sysu import read_id_file
from vlalign.models.pretrained import from_pretrained
from vlalign.reid import evaluate_reid


def unseen_ids(root: Path, above: int, num: int, seed: int = 0) -> list[int]:
    """`num` test identities of `root` with pid > `above`, drawn with `seed` (sorted)."""
    pool = [pid for pid in read_id_file(root / "exp" / "test_id.txt") if pid > above]
    if len(pool) < num:
        raise SystemExit(f"{root}: only {len(pool)} test identities above pid {above}, {num} asked for")
    return sorted(np.random.default_rng(seed).choice(pool, num, replace=False).tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", required=True, help="save_pretrained folders of re-id models")
    parser.add_argument("--data", default="runs/bench/sysu1200", help="the big synthetic SYSU set")
    parser.add_argument("--unseen-above", type=int, default=300, help="pids up to this may have been trained on")
    parser.add_argument("--num", type=int, default=60, help="identities scored (the default benchmark's 60)")
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    root = Path(args.data)
    ids = unseen_ids(root, args.unseen_above, args.num)
    print(f"{len(ids)} identities of {root} with pid > {args.unseen_above}, {args.trials} trials\n")
    print("| model | training identities | queries | Rank-1 | mAP |\n|---|---:|---:|---:|---:|")
    for weights in args.weights:
        model = from_pretrained(weights)
        (s,) = evaluate_reid(model, "sysu", root, trials=args.trials, ids=ids).values()
        print(f"| {weights} | {model.config.num_ids} | {s['queries']} | {100 * s['rank1']:.1f} | "
              f"{100 * s['mAP']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
