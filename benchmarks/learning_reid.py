"""Does `clip4vireid_lite` learn the synthetic SYSU-MM01 benchmark on a 2-core CPU, and what do the stages add?

Runs `vlalign reid train` once per variant on the default synthetic SYSU set (`vlalign synth sysu`, generated if
missing), then reads every run's `results.json` (all-search, single-shot, 10 seeded trials) into one table:

    baseline   image-only: stage 2 alone with the text terms weighted 0 (ID + triplet)
    tsg-ife    stage 1 (TSG) then stage 2 (IFE) for as many image-encoder iterations as the full model
    full       + stage 3 (HSA): the three stages of CLIP4VI-ReID

Every variant trains the image encoder for the same number of iterations (IFE + HSA of `--iters`); the full
model is meant to fit a 30-minute budget with the default `--iters` (check the 'train min' column).

    .venv/bin/python benchmarks/learning_reid.py --write
    .venv/bin/python benchmarks/learning_reid.py --data /tmp/s --num-ids 20 --iters 5 20 10 --trials 2  # smoke

A variant whose folder already holds `results.json` is not trained again (`--force` retrains); an interrupted
one resumes at its stage.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from report import RESULTS, footer, publish  # sibling module (benchmarks/ is on sys.path when run)

DEFAULT_NUM_IDS, DEFAULT_SEED = 300, 0  # vlalign.synth.sysu's defaults
VARIANTS = ("baseline", "tsg-ife", "full")


def recipe(model: str):
    """A builder's config (recipe: stage_iters, stage_ema, ...), read without building the model."""
    from vlalign.models.reid.model import LITE_VARIANT, CLIP4VIReIDConfig

    variants = {"clip4vireid_lite": LITE_VARIANT, "clip4vireid_vitb16": {}}
    if model not in variants:
        raise SystemExit(f"--model must be one of {sorted(variants)}, got {model!r}")
    return CLIP4VIReIDConfig(**variants[model])


def variant_args(name: str, iters: list[int]) -> list[str]:
    """The stages, per-stage iterations and loss overrides of one variant."""
    tsg, ife, hsa = iters
    if name == "baseline":
        return ["--stages", "2", "--iters", str(tsg), str(ife + hsa), str(hsa), "--set", "i2t_weight=0",
                "ife_weight=0"]
    if name == "tsg-ife":
        return ["--stages", "1", "2", "--iters", str(tsg), str(ife + hsa), str(hsa)]
    return ["--stages", "1", "2", "3", "--iters", str(tsg), str(ife), str(hsa)]


def run_variant(args, name: str, data: Path) -> dict:
    run = Path(args.out) / name
    if (run / "results.json").is_file() and not args.force:
        print(f"{name}: reusing {run / 'results.json'}")
        return json.loads((run / "results.json").read_text())
    cmd = [sys.executable, "-m", "vlalign.cli", "reid", "train", args.model, "--data", str(data), "--out", str(run),
           "--trials", str(args.trials), "--seed", str(args.seed), "--save-every", "200",
           "--eval-every", str(args.eval_every),
           *variant_args(name, args.iters)]
    if args.set:
        cmd += ["--set", *args.set] if "--set" not in cmd else args.set  # one --set: they do not add up
    if run.exists():
        cmd.append("--resume")
    print("+", " ".join(cmd), flush=True)
    tic = time.perf_counter()
    subprocess.run(cmd, check=True)
    result = json.loads((run / "results.json").read_text())
    result["wall_seconds"] = time.perf_counter() - tic  # this invocation: training + final evaluation
    (run / "results.json").write_text(json.dumps(result, indent=2))
    return result


def train_minutes(result: dict) -> float:
    """Training time of the stages run in the last invocation (engine summaries; resumed parts only)."""
    parts = ("seconds", "prepare_seconds", "center_seconds")  # steps, stage-1 extraction, the test-feature centre
    return sum(sum(s.get(k, 0) for k in parts) for s in result["train"].values() if isinstance(s, dict)) / 60


def table(rows: dict[str, dict]) -> str:
    lines = ["| variant | stages | R1 | R5 | R10 | R20 | mAP | mINP | trials | train min |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, res in rows.items():
        (protocol, m), = list(res["results"].items())[:1]
        stages = "+".join(["TSG", "IFE", "HSA"][int(s) - 1] for s in res["train"])
        lines.append(f"| {name} | {stages} | {100 * m['rank1']:.2f} | {100 * m['rank5']:.2f} | "
                     f"{100 * m['rank10']:.2f} | {100 * m['rank20']:.2f} | {100 * m['mAP']:.2f} | "
                     f"{100 * m['mINP']:.2f} | {m['trials']} | {train_minutes(res):.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="clip4vireid_lite")
    p.add_argument("--data", default="runs/bench/sysu", help="generated here if missing")
    p.add_argument("--num-ids", type=int, default=DEFAULT_NUM_IDS, help="identities when generating --data")
    p.add_argument("--out", default=None, help="default runs/bench/learning_<model>")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--iters", type=int, nargs=3, default=None, metavar=("TSG", "IFE", "HSA"),
                   help="default: the model's recipe (its config's stage_iters)")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=0,
                   help="R1 / mAP of one trial in the log (0 = off); these evaluations count in 'train min'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="model config overrides")
    p.add_argument("--force", action="store_true")
    p.add_argument("--write", action="store_true", help=f"write {RESULTS}/learning_reid.md")
    args = p.parse_args(argv)
    args.out = args.out or f"runs/bench/learning_{args.model}"
    config = recipe(args.model)
    args.iters = args.iters or list(config.stage_iters)

    data = Path(args.data)
    if not (data / "exp" / "test_id.txt").is_file():
        subprocess.run([sys.executable, "-m", "vlalign.cli", "synth", "sysu", "--out", str(data), "--num-ids",
                        str(args.num_ids), "--seed", str(DEFAULT_SEED)], check=True)
    done = {name: run_variant(args, name, data) for name in args.variants}  # trained in the order given
    rows = {name: done[name] for name in VARIANTS if name in done}
    summary = json.loads((data / "dataset.json").read_text()) if (data / "dataset.json").is_file() else {}
    text = (f"# Learning the synthetic SYSU-MM01 benchmark: {args.model}\n\n"
            f"Synthetic SYSU-MM01 (`vlalign synth sysu`, {summary.get('num_ids', args.num_ids)} identities, seed "
            f"{DEFAULT_SEED}); all-search, single-shot, {args.trials} seeded trials (AGW lineage), image encoder "
            f"only, cosine distance; metrics in percent. Iterations (TSG, IFE, HSA) = {tuple(args.iters)}; every "
            f"variant trains the image encoder for IFE + HSA iterations; weight-average decay per stage "
            f"(stage_ema, 0 = live weights) = {config.stage_ema}. 'train min' is the engine's training "
            f"time (stage-1 feature extraction and the fitting of the test-feature centre included, final evaluation "
            f"excluded).\n\n"
            f"{table(rows)}\n\n" + footer("learning_reid.py", argv))
    publish(text, "learning_reid.md", args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
