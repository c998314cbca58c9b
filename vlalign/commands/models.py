"""`vlalign train | eval | predict` for referring image segmentation models (front-end only)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (run under torchrun for several processes)")
    p.add_argument("model", help="builder name, e.g. alignformer_lite (see `vlalign train --list`)")
    p.add_argument("--data", required=True, help="refer-format folder (refs(<split_by>).p, instances.json)")
    p.add_argument("--out", required=True, help="run folder; the trained model goes to OUT/model")
    p.add_argument("--split-by", default="unc")
    p.add_argument("--image-dir", default=None, help="images folder (default DATA/images)")
    add_train_options(p, batch_size=16, batch_help="global batch (all processes)",
                      set_example="contrast_weight=0 text_dir=/models/bert-base-uncased")
    p.add_argument("--shuffle-expressions", action="store_true",
                   help="language ablation: train each mask with another ref's sentence")
    p.add_argument("--hflip", type=float, default=0.0, metavar="P",
                   help="mirror each training sample with probability P, swapping left/right in its sentence")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="mIoU / oIoU / Prec@X of a trained model folder")
    p.add_argument("--weights", required=True, help="model folder written by training (config.json + safetensors)")
    p.add_argument("--data", required=True)
    p.add_argument("--split", nargs="*", default=None, help="default: every evaluation split of --split-by")
    p.add_argument("--split-by", default="unc")
    p.add_argument("--image-dir", default=None)
    p.add_argument("--resolution", default="original", choices=["original", "input"])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json", default=None, help="write the metrics here")
    p.set_defaults(func=_eval)

    p = sub.add_parser("predict", help="segment what an expression refers to in an image")
    p.add_argument("--weights", required=True)
    p.add_argument("image")
    p.add_argument("expressions", nargs="+")
    p.add_argument("--out", required=True, help="mask PNG (several expressions: OUT_<k>.png); overlay beside it")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--device", default=None)
    p.set_defaults(func=_predict)


def add_train_options(p: argparse.ArgumentParser, *, batch_size: int, batch_help: str, set_example: str) -> None:
    """The options of every `train` command that become the engine's TrainConfig (see `train_config`)."""
    length = p.add_mutually_exclusive_group()
    length.add_argument("--iters", type=int, default=None)
    length.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=batch_size, help=batch_help)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=None, help="default: the model's recipe")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--schedule", default="poly", choices=["poly", "cosine", "step", "constant"])
    p.add_argument("--warmup", type=int, default=0, help="warm-up iterations")
    p.add_argument("--clip-grad", type=float, default=None)
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue OUT/checkpoints/latest exactly")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help=f"model config overrides, e.g. --set {set_example}")
    p.add_argument("--no-final-eval", action="store_true")


def train_config(args: argparse.Namespace, model):
    """TrainConfig from the options of `add_train_options` (one epoch when neither length is given)."""
    from vlalign.engine import TrainConfig

    epochs = 1 if args.iters is None and args.epochs is None else args.epochs
    return TrainConfig(
        out_dir=args.out, max_iters=args.iters, epochs=epochs, batch_size=args.batch_size,
        grad_accum=args.grad_accum, lr=args.lr or model.config.lr, weight_decay=args.weight_decay,
        schedule=args.schedule, warmup_iters=args.warmup, clip_grad=args.clip_grad, amp=args.amp,
        eval_every=args.eval_every, save_every=args.save_every, num_workers=args.workers, device=args.device,
        seed=args.seed, resume=args.resume)


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a plain string (paths, names)
    return out


def cpu_setup() -> None:
    import torch

    # Padding masks make denormal floats that slow MKL down several-fold; the setting only reaches the worker
    # threads if made before the first parallel op (shared/docs/performance.md).
    torch.set_flush_denormal(True)
    keep_freed_memory()


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Make glibc keep the memory that freed tensors give back, for the next step to reuse; False if not glibc.

    Why: by default glibc serves every allocation over 32 MiB (activation maps, their gradients) with a fresh
    mmap and unmaps it on free, so each training step faults in and zeroes its maps again, page by page. With
    mmap off and the heap trimmed only past 1 GiB free, a clip4vireid_lite step (batch 32, 192x96, 2 cores)
    took 0.65 s against 0.79 s, for 9% more peak memory (benchmarks/README.md). PyTorch's CPU allocator has no
    cache of its own. VLALIGN_MALLOC=system leaves glibc's defaults.
    """
    if os.environ.get("VLALIGN_MALLOC", "").lower() == "system" or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and other C libraries without mallopt
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def _train(args) -> int:
    cpu_setup()
    from vlalign import refseg
    from vlalign.hub import update_model_card
    from vlalign.models.pretrained import build_model, save_pretrained

    model = build_model(args.model, **_overrides(args.set))
    config = train_config(args, model)
    summary = refseg.train_refseg(model, args.data, config, split_by=args.split_by, image_dir=args.image_dir,
                                  seed=args.seed, shuffle_text=args.shuffle_expressions, hflip=args.hflip)
    if int(os.environ.get("RANK", "0")) != 0:  # the engine has closed the process group: rank 0 finishes
        return 0
    model_dir = Path(args.out) / "model"
    save_pretrained(model, model_dir)
    print(f"model written to {model_dir}")
    if not args.no_final_eval:
        results = _evaluate_splits(model, args.data, None, args.split_by, args.image_dir, "original", 16)
        refseg.write_json(Path(args.out) / "results.json", {"results": results, "train": summary})
        update_model_card(model_dir, metrics=results)
        print(refseg.metric_table(results))
    return 0


def _evaluate_splits(model, data, splits, split_by, image_dir, resolution, batch_size) -> dict:
    from vlalign import refseg
    from vlalign.synth import load_synth_info

    splits = splits or refseg.EVAL_SPLITS.get(split_by, ("val",))
    info = load_synth_info(data)  # synthetic data: per-form breakdown too
    return {split: refseg.evaluate_refseg(
        model, refseg.eval_dataset(data, split, model.config.input_size, split_by=split_by, image_dir=image_dir),
        resolution=resolution, batch_size=batch_size, info=info) for split in splits}


def _eval(args) -> int:
    cpu_setup()
    from vlalign import refseg
    from vlalign.models.pretrained import from_pretrained

    model = from_pretrained(args.weights)
    results = _evaluate_splits(model, args.data, args.split, args.split_by, args.image_dir, args.resolution,
                               args.batch_size)
    print(refseg.metric_table(results))
    if args.json:
        refseg.write_json(args.json, results)
    return 0


def _predict(args) -> int:
    cpu_setup()
    from vlalign.predictor import ReferringSegmenter, as_pil
    from vlalign.visualize import PALETTE, overlay_mask

    predictor = ReferringSegmenter.from_pretrained(args.weights, device=args.device)
    image = as_pil(args.image)
    predictor.set_image(image)
    masks = predictor.predict(args.expressions, threshold=args.threshold)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out] if len(masks) == 1 else [out.with_name(f"{out.stem}_{k}{out.suffix}") for k in range(len(masks))]
    overlay = image
    for k, (mask, path, text) in enumerate(zip(masks, paths, args.expressions)):
        Image.fromarray(mask.astype(np.uint8) * 255).save(path)
        overlay = overlay_mask(overlay, mask, color=PALETTE[k % len(PALETTE)])
        print(f"{path}: {int(mask.sum())} pixels for {text!r}")
    overlay_path = out.with_name(f"{out.stem}_overlay.png")
    overlay.save(overlay_path)
    print(f"overlay: {overlay_path}")
    return 0
