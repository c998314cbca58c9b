"""Does the two-stream video model learn the synthetic referring-video benchmark on a 2-core CPU, and does it use
the time axis?

Runs `vlalign rvos train` once per variant on the default synthetic video benchmark (`vlalign synth ytvos`,
generated if missing), with the same recipe, then reads every run's `results.json` (J&F on every valid
expression, broken down by the expression metadata of `synth_info.json`: "motion-only" = the target has a twin
of identical appearance, so only its motion tells them apart; "other" = the rest; and per expression kind)
into one table:

    full           the model's recipe (clips of num_frames frames, LMDF on; the lite recipe decodes with the
                   per-object query decoder, vlalign/models/rvos/queries.py)
    single-frame   the control: clips of one frame and no LMDF (`--set num_frames=1 lmdf=false`): it sees
                   each frame alone at inference too, so expressions that only motion resolves are guesses
    single-mask    the full model with the single-mask head instead of the query decoder
                   (`--set query_decoder=false`; the lite recipe before 2026-12-05)
    queries        `--set query_decoder=true` (the same as full for the lite recipe; for other builders)

    .venv/bin/python benchmarks/learning_rvos.py --eval-every 700 --write   # -> benchmarks/results/learning_rvos.md
    .venv/bin/python benchmarks/learning_rvos.py --variants full --iters 50     # one quick run

Both variants run the same iterations of the same number of clips (the control's clips hold 1 frame, so its
steps are cheaper: compare its 'train min' too). A variant whose folder already holds `results.json` is not
trained again (`--force` retrains); an interrupted run resumes exactly.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from report import RESULTS, footer, publish, train_once  # sibling module (benchmarks/ is on sys.path when run)

# variant -> extra model config overrides
VARIANTS = {"full": [], "single-frame": ["num_frames=1", "lmdf=false"], "single-mask": ["query_decoder=false"],
            "queries": ["query_decoder=true"]}


def recipe(args, overrides: list[str] = ()) -> list[str]:
    """The training options every variant shares, plus the variant's overrides (one --set: it does not add up)."""
    out = ["--iters", str(args.iters), "--batch-size", str(args.batch_size), "--warmup", str(args.warmup),
           "--eval-every", str(args.eval_every), "--eval-expressions", str(args.eval_expressions),
           "--save-every", "100", "--seed", str(args.seed), "--clip-grad", str(args.clip_grad)]
    if args.frame_stride is not None:  # else the model config's (stored in the model, used at inference too)
        out += ["--frame-stride", str(args.frame_stride)]
    sets = [*args.set, *overrides]
    return out + ["--set", *sets] if sets else out


def run_variant(args, name: str, data: Path) -> dict:
    return train_once(Path(args.out) / name, ["rvos", "train", args.model, "--data", str(data),
                                              *recipe(args, VARIANTS[name])], args.force)


def table(rows: dict[str, dict]) -> str:
    nan = float("nan")
    lines = ["| variant | J&F | J | F | J&F motion-only | J&F other | J&F appearance kind | n (motion-only / "
             "other / appearance) | train min | iters |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, res in rows.items():
        m = res["results"]["valid"]
        groups = m.get("breakdown", {})
        motion, other = groups.get("motion_only", {}), groups.get("not_motion_only", {})
        look = groups.get("kind:appearance", {})
        lines.append(f"| {name} | {m['J&F-Mean']:.3f} | {m['J-Mean']:.3f} | {m['F-Mean']:.3f} | "
                     f"{motion.get('J&F', nan):.3f} | {other.get('J&F', nan):.3f} | {look.get('J&F', nan):.3f} | "
                     f"{motion.get('count', 0)} / {other.get('count', 0)} / {look.get('count', 0)} | "
                     f"{res['train']['seconds'] / 60:.1f} | "
                     f"{res['train']['iteration']} |")
    return "\n".join(lines)


def kinds_table(rows: dict[str, dict]) -> str:
    """J&F per expression kind (synth_info.json 'kind'), one column per variant."""
    kinds = sorted({k for res in rows.values() for k in res["results"]["valid"].get("breakdown", {})
                    if k.startswith("kind:")})
    lines = ["| kind | n | " + " | ".join(rows) + " |", "|---|---:|" + "---:|" * len(rows)]
    for kind in kinds:
        cells = [res["results"]["valid"]["breakdown"].get(kind, {}) for res in rows.values()]
        count = next((c["count"] for c in cells if c), 0)
        lines.append(f"| {kind[5:]} | {count} | " + " | ".join(f"{c.get('J&F', float('nan')):.3f}" for c in cells)
                     + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="twostream_lite")
    p.add_argument("--data", default="runs/bench/ytvos", help="generated here (default benchmark) if missing")
    p.add_argument("--num-videos", type=int, default=None, help="only when generating (default: the default set)")
    p.add_argument("--out", default="runs/bench/learning_rvos")
    p.add_argument("--variants", nargs="+", default=["full", "single-frame"], choices=list(VARIANTS))
    p.add_argument("--iters", type=int, default=1400, help="~1 s per iteration of 4 clips on 2 cores (lite)")
    p.add_argument("--batch-size", type=int, default=4, help="clips per iteration")
    p.add_argument("--frame-stride", type=int, default=None, help="default: the model config's")
    p.add_argument("--clip-grad", type=float, default=1.0)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--eval-expressions", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="model config overrides")
    p.add_argument("--force", action="store_true")
    p.add_argument("--write", action="store_true", help=f"write {RESULTS}/learning_rvos.md")
    args = p.parse_args(argv)

    data = Path(args.data)
    if not (data / "synth_info.json").is_file():
        cmd = [sys.executable, "-m", "vlalign.cli", "synth", "ytvos", "--out", str(data)]
        subprocess.run(cmd + (["--num-videos", str(args.num_videos)] if args.num_videos else []), check=True)
    dataset = json.loads((data / "dataset.json").read_text())
    rows = {name: run_variant(args, name, data) for name in args.variants}
    text = (f"# Learning the synthetic referring-video benchmark: {args.model}\n\n"
            f"Synthetic Ref-YouTube-VOS set (`vlalign synth ytvos`, {dataset['num_videos']} videos, seed "
            f"{dataset['seed']}, {dataset['width']}x{dataset['height']}); J&F (Ref-YouTube-VOS protocol, official "
            f"J and F at the frames' own size) on every valid expression, sliding window of the model's clip "
            f"length. 'motion-only': expressions whose target has a twin of identical appearance "
            f"(synth_info.json). Recipe: `{' '.join(recipe(args))}`. 'train min' is the wall clock of training "
            f"(evaluations during training included, final evaluation excluded).\n\n{table(rows)}\n\n"
            f"Per expression kind:\n\n{kinds_table(rows)}\n\n" + footer("learning_rvos.py", argv))
    publish(text, "learning_rvos.md", args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
