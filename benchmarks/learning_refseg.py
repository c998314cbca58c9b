"""Does a referring segmenter learn the synthetic benchmark on a 2-core CPU, and does it use the language?

Runs `vlalign train` once per variant on the default synthetic benchmark (generated if missing), each with the
same recipe, then reads every run's `results.json` (val / testA / testB at the original resolution) and the
wall-clock time of its training (`train.seconds`, evaluation during training included) into one table:

    full          the model's recipe
    no-contrast   AlignFormer without the cross-modal instance contrastive loss (`contrast_weight=0`)
    no-bem        EFN without the boundary enhancement module (`bem=false`: mask terms only)
    shuffled      language ablation: every mask trained with another ref's sentence (`--shuffle-expressions`)

    .venv/bin/python benchmarks/learning_refseg.py --model alignformer_lite --write
    .venv/bin/python benchmarks/learning_refseg.py --variants full --iters 300     # one quick run

A variant whose folder already holds `results.json` is not trained again (`--force` retrains), so an
interrupted benchmark picks up where it stopped.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from report import RESULTS, footer, publish, train_once  # sibling module (benchmarks/ is on sys.path when run)

from vlalign.synth import DEFAULT_NUM_IMAGES, DEFAULT_SEED

# variant -> (extra flags, extra model config overrides)
VARIANTS = {
    "full": ([], []),
    "no-contrast": ([], ["contrast_weight=0"]),
    "shuffled": (["--shuffle-expressions"], []),
    "no-bem": ([], ["bem=false"]),  # EFN: the decoder without the boundary enhancement module
}


def recipe(args, overrides: list[str] = ()) -> list[str]:
    """The training options every variant shares, plus the variant's overrides (one --set: it does not add up)."""
    out = ["--iters", str(args.iters), "--batch-size", str(args.batch_size), "--warmup", str(args.warmup),
           "--eval-every", str(args.eval_every), "--save-every", "100", "--seed", str(args.seed),
           "--clip-grad", str(args.clip_grad)]
    sets = [*args.set, *overrides]
    return out + ["--set", *sets] if sets else out


def run_variant(args, name: str, data: Path) -> dict:
    flags, overrides = VARIANTS[name]
    return train_once(Path(args.out) / name, ["train", args.model, "--data", str(data), *flags,
                                              *recipe(args, overrides)], args.force)


def table(rows: dict[str, dict]) -> str:
    lines = ["| variant | split | mIoU | oIoU | P@0.5 | P@0.7 | P@0.9 | n | train min | iters |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, res in rows.items():
        minutes = res["train"]["seconds"] / 60
        for split, m in res["results"].items():
            lines.append(f"| {name} | {split} | {m['mIoU']:.3f} | {m['oIoU']:.3f} | {m['prec@0.5']:.3f} | "
                         f"{m['prec@0.7']:.3f} | {m['prec@0.9']:.3f} | {m['num_samples']} | {minutes:.1f} | "
                         f"{res['train']['iteration']} |")
    return "\n".join(lines)


def form_table(rows: dict[str, dict]) -> str:
    """val mIoU per expression form (synth_info.json; runs evaluated before it existed are left out)."""
    have = {name: res["results"]["val"]["breakdown"] for name, res in rows.items()
            if "breakdown" in res["results"].get("val", {})}
    if not have:
        return ""
    forms = sorted({f for b in have.values() for f in b})
    header = " | ".join(f.removeprefix("form:") for f in forms)
    lines = ["Per expression form, val mIoU (n):\n", f"| variant | {header} |", "|---" + "|---:" * len(forms) + "|"]
    for name, b in have.items():
        cells = [f"{b[f]['mIoU']:.3f} ({b[f]['count']})" if f in b else "" for f in forms]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="alignformer_lite")
    p.add_argument("--data", default="runs/bench/data", help="generated here (default benchmark) if missing")
    p.add_argument("--out", default=None, help="default runs/bench/learning_<model>")
    p.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS),
                   help="default: full, shuffled and the model's own ablation (no-contrast / no-bem)")
    p.add_argument("--iters", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--clip-grad", type=float, default=1.0)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="model config overrides")
    p.add_argument("--force", action="store_true")
    p.add_argument("--write", action="store_true", help=f"write {RESULTS}/learning_<model>.md")
    args = p.parse_args(argv)
    args.out = args.out or f"runs/bench/learning_{args.model}"
    if args.variants is None:
        args.variants = ["full", "shuffled", "no-bem" if args.model.startswith("efn") else "no-contrast"]

    data = Path(args.data)
    if not (data / "instances.json").is_file():
        subprocess.run([sys.executable, "-m", "vlalign.cli", "synth", "refcoco", "--out", str(data),
                        "--num-images", str(DEFAULT_NUM_IMAGES), "--seed", str(DEFAULT_SEED)], check=True)
    rows = {name: run_variant(args, name, data) for name in args.variants}
    text = (f"# Learning the synthetic referring benchmark: {args.model}\n\n"
            f"Default synthetic benchmark (`vlalign synth refcoco`, {DEFAULT_NUM_IMAGES} images, seed "
            f"{DEFAULT_SEED}); metrics at the original resolution on every sentence of each split. "
            f"Recipe: `{' '.join(recipe(args))}`. 'train min' is the wall clock of training, evaluations on "
            f"300 val sentences during training included, final evaluation excluded.\n\n"
            f"{table(rows)}\n\n{form_table(rows)}" + footer("learning_refseg.py", argv))
    publish(text, f"learning_{args.model}.md", args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
