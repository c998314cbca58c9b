"""Language-blind baselines on the synthetic referring benchmark: how far do image priors alone get?

Each baseline picks a mask from the image's annotated objects without reading the sentence:

    largest   the object with the largest visible area
    central   the object whose visible centroid is closest to the image centre
    random    a uniformly random object (seeded per sentence)
    union     the union of all objects
    oracle    the object that best matches the ground truth (sanity upper bound: 1.0 if annotations agree)

Scored with `RefSegEvaluator` (mIoU and oIoU at the original resolution) on val / testA / testB, read through
`ReferDataset` exactly as a model's evaluation would. A benchmark that needs language keeps every baseline
but the oracle low (the generator's target is mIoU <= 0.35).

    python benchmarks/language_blind.py                      # generates the default benchmark in a temp dir
    python benchmarks/language_blind.py --data DIR --write   # an existing one; also writes the results file
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vlalign.data.refer import ReferDataset, load_instances, load_refs
from vlalign.metrics.refseg import RefSegEvaluator
from vlalign.synth.refcoco import DEFAULT_NUM_IMAGES, DEFAULT_SEED, generate_refcoco

BASELINES = ("largest", "central", "random", "union", "oracle")
EVAL_SPLITS = ("val", "testA", "testB")
RESULTS = Path(__file__).parent / "results" / "language_blind.md"


def blind_predictions(
    masks: list[np.ndarray], gt: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """One bool HxW prediction per baseline, from the image's object masks (HxW uint8) alone.

    `gt` is used by the oracle only.
    """
    height, width = masks[0].shape
    areas = [int(m.sum()) for m in masks]
    centroids = [np.argwhere(m).mean(0) if a else np.array([np.inf, np.inf]) for m, a in zip(masks, areas)]
    centre = np.array([(height - 1) / 2, (width - 1) / 2])
    gt = gt.astype(bool)
    overlaps = [np.logical_and(m, gt).sum() / max(np.logical_or(m, gt).sum(), 1) for m in masks]
    picks = {
        "largest": int(np.argmax(areas)),
        "central": int(np.argmin([np.linalg.norm(c - centre) for c in centroids])),
        "random": int(rng.integers(len(masks))),
        "oracle": int(np.argmax(overlaps)),
    }
    preds = {name: masks[k].astype(bool) for name, k in picks.items()}
    preds["union"] = np.logical_or.reduce([m.astype(bool) for m in masks])
    return {name: preds[name] for name in BASELINES}


def evaluate_baselines(data_dir: str | Path, splits=EVAL_SPLITS, seed: int = 0) -> dict[str, dict[str, dict]]:
    """{split: {baseline: RefSegEvaluator result}} on a refer-layout data set."""
    data_dir = Path(data_dir)
    _, annotations, _ = load_instances(data_dir / "instances.json")
    anns_of_image: dict[int, list[int]] = {}
    for ann_id, ann in annotations.items():
        anns_of_image.setdefault(ann["image_id"], []).append(ann_id)
    image_of_sent = {
        s["sent_id"]: ref["image_id"] for ref in load_refs(data_dir / "refs(unc).p") for s in ref["sentences"]
    }
    results: dict[str, dict[str, dict]] = {}
    for split in splits:
        dataset = ReferDataset(data_dir, split, split_by="unc", mode="eval")
        evaluators = {name: RefSegEvaluator(resolution="original") for name in BASELINES}
        for sent_id, gt in dataset.eval_targets():
            masks = [dataset.ann_mask(a) for a in anns_of_image[image_of_sent[sent_id]]]
            preds = blind_predictions(masks, gt, np.random.default_rng([seed, sent_id]))
            for name, pred in preds.items():
                evaluators[name].process([pred], [gt.astype(bool)], [sent_id])
        results[split] = {name: ev.evaluate() for name, ev in evaluators.items()}
    return results


def markdown_table(results: dict[str, dict[str, dict]]) -> str:
    splits = list(results)
    head = "| baseline | " + " | ".join(f"{s} mIoU | {s} oIoU" for s in splits) + " |"
    rule = "|---|" + "---:|---:|" * len(splits)
    rows = [
        f"| {name} | "
        + " | ".join(f"{results[s][name]['mIoU']:.3f} | {results[s][name]['oIoU']:.3f}" for s in splits)
        + " |"
        for name in BASELINES
    ]
    counts = ", ".join(f"{s} {results[s]['oracle']['num_samples']}" for s in splits)
    return "\n".join([head, rule, *rows, "", f"Expressions: {counts}."])


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu} ({cores} cores), {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, help="an existing refer-layout benchmark (default: generate one)"
    )
    parser.add_argument("--num-images", type=int, default=DEFAULT_NUM_IMAGES)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="generator seed (and baseline seed)")
    parser.add_argument("--write", action="store_true", help=f"write the table to {RESULTS}")
    args = parser.parse_args(argv)
    # The evaluator sums one small mask per call; torch's thread pool costs more than it saves there (x10).
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        generation = ""
        if data is None:
            data = Path(tmp) / "synth_refcoco"
            start, cpu = time.perf_counter(), time.process_time()
            generate_refcoco(data, num_images=args.num_images, seed=args.seed)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            generation = (
                f"generated {args.num_images} images (seed {args.seed}) in {wall:.1f} s ({cpu:.1f} s CPU)"
            )
            print(generation)
        results = evaluate_baselines(data, seed=args.seed)
    table = markdown_table(results)
    print(table)
    if args.write:
        command = "python benchmarks/language_blind.py --write" + (
            f" --data {args.data}" if args.data else ""
        )
        if args.data is None and (args.num_images, args.seed) != (DEFAULT_NUM_IMAGES, DEFAULT_SEED):
            command += f" --num-images {args.num_images} --seed {args.seed}"
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            _REPORT.format(
                table=table,
                command=command,
                machine=_machine(),
                date=datetime.date.today().isoformat(),
                generation=generation or f"data: {args.data}",
            )
        )
        print(f"wrote {RESULTS}")
    return 0


_REPORT = """# Language-blind baselines on the synthetic referring benchmark

What image priors alone achieve on the default benchmark (`vlalign synth refcoco`, defaults): each baseline
picks a mask without reading the sentence. mIoU and oIoU at the original resolution (`RefSegEvaluator`),
every sentence of val / testA / testB counted. The generator is tuned so that every language-blind baseline
stays at mIoU <= 0.35; the oracle (best annotated object) must be 1.000, which checks that the written
annotations, the reader and the evaluator agree.

{table}

- largest: object with the largest visible area; central: visible centroid nearest the image centre;
  random: uniform over the image's objects (seeded per sentence); union: all objects; oracle: the object
  that best matches the ground truth.
- Command: `{command}`
- {generation}
- Machine: {machine}
- Date: {date}
"""


if __name__ == "__main__":
    sys.exit(main())
