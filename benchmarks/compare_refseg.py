"""AlignFormer vs EFN on the synthetic referring benchmark, and what EFN's boundary enhancement module adds.

Reads the model folders and `results.json` written by benchmarks/learning_refseg.py
(runs/bench/learning_<model>/<variant>/) and adds, per trained model:

- parameters, GFLOP per image (torch.utils.flop_counter) and forward latency at batch 1 on this machine;
- boundary quality on val: the DAVIS boundary F-measure (`vlalign.metrics.vos.boundary_f`, tolerance
  ceil(0.008 x image diagonal)) between each predicted mask and the ground truth at the original resolution,
  averaged over the val sentences, next to the mean IoU computed in the same pass.

    .venv/bin/python benchmarks/learning_refseg.py --model alignformer_lite      # the runs this reads
    .venv/bin/python benchmarks/learning_refseg.py --model efn_lite
    .venv/bin/python benchmarks/compare_refseg.py --write   # -> benchmarks/results/compare_refseg.md
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from report import publish  # noqa: E402
from speed_alignformer import flops, latency  # noqa: E402  (sibling benchmark script)

from vlalign.metrics.vos import boundary_f  # noqa: E402
from vlalign.predictor import ReferringSegmenter  # noqa: E402
from vlalign.refseg import eval_dataset  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "compare_refseg.md"
RUNS = [("alignformer_lite", "full"), ("efn_lite", "full"), ("efn_lite", "no-bem")]


def boundary_quality(model_dir: Path, data: Path, limit: int | None) -> tuple[float, float, int]:
    """(mean boundary F, mean IoU, n) over val sentences, predictions at the original resolution."""
    segmenter = ReferringSegmenter.from_pretrained(model_dir)
    dataset = eval_dataset(data, "val", segmenter.model.config.input_size)
    fs, ious = [], []
    for index in range(min(len(dataset), limit or len(dataset))):
        sample = dataset[index]
        gt = sample["orig_mask"].astype(bool)
        segmenter.set_image(dataset.image_info(sample["image_id"])["path"])
        pred = segmenter.predict(sample["text"])
        fs.append(float(boundary_f(gt, pred)))
        union = np.logical_or(gt, pred).sum()
        ious.append(float(np.logical_and(gt, pred).sum() / union) if union else 1.0)
    return float(np.mean(fs)), float(np.mean(ious)), len(fs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="runs/bench/data")
    p.add_argument("--runs", default="runs/bench")
    p.add_argument("--limit", type=int, default=None, help="val sentences for the boundary pass (default all)")
    p.add_argument("--write", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    metric_rows, cost_rows = [], []
    for model_name, variant in RUNS:
        run = Path(args.runs) / f"learning_{model_name}" / variant
        if not (run / "results.json").is_file():
            print(f"skip {model_name}/{variant}: no {run / 'results.json'} (run benchmarks/learning_refseg.py)")
            continue
        res = json.loads((run / "results.json").read_text())
        label = f"{model_name} ({variant})"
        for split, m in res["results"].items():
            precs = " | ".join(f"{m[f'prec@{t}']:.3f}" for t in ("0.5", "0.6", "0.7", "0.8", "0.9"))
            metric_rows.append(f"| {label} | {split} | {m['mIoU']:.3f} | {m['oIoU']:.3f} | {precs} |")
        segmenter = ReferringSegmenter.from_pretrained(run / "model")
        model = segmenter.model.eval()
        params = sum(t.numel() for t in model.parameters()) / 1e6
        gflop = flops(model) / 1e9
        seconds = latency(model, 1, repeats=5)
        bf, miou, n = boundary_quality(run / "model", Path(args.data), args.limit)
        cost_rows.append(f"| {label} | {model.config.input_size} | {params:.1f} | {gflop:.2f} | {seconds * 1000:.0f} | "
                         f"{res['train']['seconds'] / 60:.1f} ({res['train']['iteration']} it) | {bf:.3f} | "
                         f"{miou:.3f} (n={n}) |")
        print(cost_rows[-1], flush=True)
    text = (
        f"# AlignFormer vs EFN on the synthetic referring benchmark\n\n"
        f"Measured {date.today()} on {platform.processor() or 'x86_64'} (2 threads, torch {torch.__version__}). "
        f"Models trained by `benchmarks/learning_refseg.py` with each model's own lite recipe (batch 12); "
        f"metrics at the original resolution on every sentence of each split.\n\n"
        f"| model | split | mIoU | oIoU | P@0.5 | P@0.6 | P@0.7 | P@0.8 | P@0.9 |\n|---|---|---:|---:|---:|---:|"
        f"---:|---:|---:|\n" + "\n".join(metric_rows) + "\n\n"
        "| model | input | params (M) | GFLOP/image | latency b=1 (ms) | train min | val boundary F | val IoU "
        "(same pass) |\n|---|---|---:|---:|---:|---:|---:|---:|\n" + "\n".join(cost_rows) + "\n\n"
        "Boundary F: DAVIS boundary F-measure per sentence (tolerance ceil(0.008 x diagonal)), mean over val.\n\n"
        "Reproduce: `.venv/bin/python benchmarks/compare_refseg.py --write`\n")
    publish(text, RESULTS.name, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
