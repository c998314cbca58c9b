"""`vlalign demo`: the main job on the embedded default — synthetic benchmark, CPU training, metrics, overlays."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

# Sized so that the whole job stays under 10 minutes on a 2-core CPU (measured: benchmarks/README.md); the
# learning benchmark trains the same recipe longer.
DEMO_ITERS = 150
DEMO_BATCH = 12


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="generate the synthetic benchmark, train alignformer_lite, evaluate")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--model", default="alignformer_lite")
    p.add_argument("--iters", type=int, default=DEMO_ITERS)
    p.add_argument("--batch-size", type=int, default=DEMO_BATCH)
    p.add_argument("--num-images", type=int, default=None, help="default: the default benchmark's size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.set_defaults(func=run_demo)


def run_demo(args) -> int:
    from vlalign import refseg
    from vlalign.commands.models import cpu_setup
    from vlalign.engine import TrainConfig
    from vlalign.hub import update_model_card
    from vlalign.models.pretrained import build_model, save_pretrained
    from vlalign.synth import load_synth_info
    from vlalign.synth.refcoco import DEFAULT_NUM_IMAGES, generate_refcoco

    start = time.perf_counter()
    cpu_setup()
    out = Path(args.out)
    data = out / "data"
    if not (data / "instances.json").is_file():
        print(f"[1/4] writing the synthetic referring benchmark to {data}")
        generate_refcoco(data, num_images=args.num_images or DEFAULT_NUM_IMAGES, seed=args.seed)
    else:
        print(f"[1/4] using the synthetic benchmark already in {data}")

    if not args.resume and (out / "run").exists():
        shutil.rmtree(out / "run")  # the demo retrains from scratch unless asked to resume
    print(f"[2/4] training {args.model} for {args.iters} iterations (batch {args.batch_size}) on the CPU")
    model = build_model(args.model)
    config = TrainConfig(out_dir=str(out / "run"), max_iters=args.iters, batch_size=args.batch_size,
                         lr=model.config.lr, warmup_iters=min(30, args.iters // 10), clip_grad=1.0, save_every=50,
                         log_every=25, seed=args.seed, device="cpu", resume=args.resume)
    refseg.train_refseg(model, data, config, eval_samples=200, seed=args.seed)
    model_dir = out / "model"
    save_pretrained(model, model_dir)

    print("[3/4] evaluating on val / testA / testB at the original resolution")
    info = load_synth_info(data)
    results = {split: refseg.evaluate_refseg(model, refseg.eval_dataset(data, split, model.config.input_size),
                                             info=info) for split in refseg.EVAL_SPLITS["unc"]}
    refseg.write_json(out / "results.json", results)
    update_model_card(model_dir, metrics=results)
    print(refseg.metric_table(results))

    print("[4/4] writing overlays (prediction | ground truth)")
    overlays = refseg.write_overlays(model, refseg.eval_dataset(data, "val", model.config.input_size),
                                     out / "overlays", count=12, seed=args.seed)
    minutes = (time.perf_counter() - start) / 60
    print(f"\ndone in {minutes:.1f} min. Outputs:\n  data      {data}\n  model     {model_dir}\n"
          f"  metrics   {out / 'results.json'} (and {out / 'run' / 'metrics.jsonl'})\n"
          f"  overlays  {overlays[0].parent} ({len(overlays)} images)\n"
          f"try: vlalign predict --weights {model_dir} IMAGE \"the red circle\" --out mask.png")
    return 0
