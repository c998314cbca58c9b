"""Did the re-id model learn to match across modalities, or to recognise its training identities?

Scores a trained model twice with the SYSU all-search single-shot protocol (seeded galleries): on the test
identities (the benchmark) and on as many *training* identities, drawn with a fixed seed, in the same roles
(every IR image a query, one visible image per identity and camera in the gallery). The gallery sizes match,
so the two Rank-1 are comparable:

- training >> test: it memorised identity-specific cues (colours, materials) that do not transfer;
- both low: it has not learnt the cross-modal match even on the identities it was trained on.

    .venv/bin/python benchmarks/reid_generalisation.py --weights runs/exp/reid/full/model [--data runs/bench/sysu]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vlalign.data.sysu import read_id_file
from vlalign.models.pretrained import from_pretrained
from vlalign.reid import evaluate_reid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="a save_pretrained folder of a re-id model")
    parser.add_argument("--data", default="runs/bench/sysu")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="which training identities are drawn")
    args = parser.parse_args()
    root = Path(args.data)
    test_ids = read_id_file(root / "exp" / "test_id.txt")
    train_ids = read_id_file(root / "exp" / "train_id.txt")
    if len(train_ids) < len(test_ids):
        raise SystemExit(f"{root}: {len(train_ids)} training ids, fewer than the {len(test_ids)} test ids")
    chosen = sorted(np.random.default_rng(args.seed).choice(train_ids, len(test_ids), replace=False).tolist())
    model = from_pretrained(args.weights)
    print("| identities | ids | queries | Rank-1 | mAP |\n|---|---:|---:|---:|---:|")
    for name, ids in (("test", None), ("training", chosen)):
        (s,) = evaluate_reid(model, "sysu", root, trials=args.trials, ids=ids).values()
        print(f"| {name} | {len(test_ids)} | {s['queries']} | {100 * s['rank1']:.1f} | {100 * s['mAP']:.1f} |")


if __name__ == "__main__":
    main()
