"""Referring video segmentation as a task: train a clip model on Ref-YouTube-VOS-layout data, predict whole
videos (sliding window) into the submission layout, and score J&F offline.

    summary = train_rvos(model, "data/ytvos", TrainConfig(out_dir="runs/rvos", max_iters=2000))
    result = evaluate_rvos(model, RefYTVOS("data/ytvos", "valid"), pred_dir="runs/rvos/valid_pred")

Predictions are written as `Annotations/<video>/<exp_id>/<frame>.png` (0/255, the frame's own size), the layout
the Ref-YouTube-VOS server takes; scoring is `vlalign.metrics.vos_score.score_ytvos` against ground truth in the
same layout (the synthetic set ships it as `valid_gt/`; for other annotated readers `write_ground_truth` makes
it). Nothing here parses command lines.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vlalign.data.clips import ReferringClips
from vlalign.data.collate import make_collate
from vlalign.data.ytvos import RefYTVOS
from vlalign.engine import TrainConfig, train
from vlalign.metrics.vos import pairwise_jf, summarize
from vlalign.metrics.vos_score import score_ytvos
from vlalign.synth import load_synth_info
from vlalign.video_predictor import VideoSegmenter

__all__ = ["train_rvos", "predict_expressions", "evaluate_rvos", "score_predictions", "write_ground_truth",
           "breakdown", "load_synth_info", "jf_table"]


def train_rvos(model: torch.nn.Module, data_dir, config: TrainConfig, *, seed: int = 0,
               eval_expressions: int = 60) -> dict[str, Any]:
    """Train on the `train` split in clips of `model.config.num_frames` frames `frame_stride` apart, evaluating
    J&F on (up to `eval_expressions` expressions of) `valid` when it has annotations. Returns the engine's
    summary; the final model folder (`save_pretrained`) is written by the caller."""
    cfg = model.config
    train_set = ReferringClips(RefYTVOS(data_dir, "train"), num_frames=cfg.num_frames, input_size=cfg.input_size,
                               mode="train", seed=seed, frame_stride=cfg.frame_stride)
    evaluate = None
    valid_dir = Path(data_dir) / "meta_expressions" / "valid" / "meta_expressions.json"
    if valid_dir.is_file():
        valid = RefYTVOS(data_dir, "valid")
        if valid.has_annotations:
            def evaluate(m):
                result = evaluate_rvos(m, valid, max_expressions=eval_expressions)
                return {f"val_{k}": v for k, v in result.items() if isinstance(v, float)}
    summary = train(model, train_set, config, collate_fn=make_collate(model.tokenize), evaluate=evaluate,
                    param_groups=model.param_groups())
    # what the model card says (save_pretrained reads it; vlalign/hub.py); metrics follow the final evaluation
    model.card_info = {
        "dataset": Path(data_dir).name,
        "data": f"Ref-YouTube-VOS-format data `{Path(data_dir).name}`, trained on the `train` split "
                f"({len(train_set)} referred objects, clips of {cfg.num_frames} frames {cfg.frame_stride} apart)",
        "protocol": "Ref-YouTube-VOS: every annotated frame of each `valid` expression, J, F and J&F per "
                    "expression, mean over expressions (`vlalign rvos eval`)",
        "training": {"iterations": summary.get("iteration"), "batch size": config.batch_size, "lr": config.lr,
                     "seed": seed}}
    return summary


def _frames(reader, video: str, names: list[str]):
    for name in names:  # decoded one at a time: the segmenter holds only its window
        yield reader.frame_path(video, name)


def predict_expressions(segmenter: VideoSegmenter, reader, expressions=None, *, pred_dir=None,
                        threshold: float = 0.5):
    """Yield (expression, frame name, bool HxW mask) for every frame of every expression, one video at a time
    (its expressions batched over the same frames); with `pred_dir`, also write the submission PNGs."""
    by_video: dict[str, list] = defaultdict(list)
    for exp in reader.expressions if expressions is None else expressions:
        by_video[exp.video].append(exp)
    for video, exps in by_video.items():
        names = exps[0].frames
        for index, _, masks in segmenter.stream(_frames(reader, video, names), [e.text for e in exps], threshold):
            for exp, mask in zip(exps, masks):
                if pred_dir is not None:
                    folder = Path(pred_dir) / "Annotations" / video / exp.exp_id
                    folder.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{names[index]}.png")
                yield exp, names[index], mask


def evaluate_rvos(model: torch.nn.Module, reader, *, max_expressions: int | None = None, pred_dir=None,
                  stride: int | None = None, threshold: float = 0.5, info: dict | None = None) -> dict[str, Any]:
    """J&F (Ref-YouTube-VOS protocol: every annotated frame of each expression, statistics per expression,
    mean over expressions) of `model` on an annotated reader, computed in memory with the official J and F.

    max_expressions: score the first N expressions only (in-training checks); pred_dir: also write the
    submission PNGs; info: `synth_info.json` contents, adds a breakdown by expression kind (`breakdown`).
    Returns the 7 global columns, the counts and, per expression, "per_expression" {"<video>/<exp_id>": J&F}.
    """
    if not reader.has_annotations:
        raise ValueError(f"{reader!r} has no annotations to score against; predict with pred_dir and submit")
    expressions = [e for e in reader.expressions if e.obj_id is not None][:max_expressions]
    if not expressions:
        raise ValueError(f"{reader!r}: no expression with an obj_id to score")
    segmenter = VideoSegmenter(model, stride=stride)
    scores: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for exp, name, mask in predict_expressions(segmenter, reader, expressions, pred_dir=pred_dir,
                                               threshold=threshold):
        if reader.annotation_path(exp.video, name) is None:
            continue  # only annotated frames are scored
        gt = reader.load_mask(exp.video, name, exp.obj_id)
        j, f = pairwise_jf(gt[None], mask[None])
        scores[f"{exp.video}/{exp.exp_id}"].append((float(j[0, 0]), float(f[0, 0])))
    objects = {k: (np.array([s[0] for s in v]), np.array([s[1] for s in v])) for k, v in scores.items()}
    table, rows = summarize(objects)
    result: dict[str, Any] = {**table, "num_expressions": len(rows),
                              "num_videos": len({e.video for e in expressions}),
                              "per_expression": {name: (j + f) / 2 for name, j, f in rows}}
    if info is not None:
        result["breakdown"] = breakdown(result["per_expression"], info, getattr(reader, "split", "valid"))
    return result


def breakdown(per_expression: dict[str, float], info: dict[str, dict], split: str = "valid") -> dict[str, Any]:
    """Mean J&F per group of a synthetic set's expressions: "motion_only" (the target has a twin of identical
    appearance) / "not_motion_only", and per "kind:<kind>" (appearance, motion, position), from
    synth_info.json ({"<split>/<video>/<exp_id>": {"kind", "motion_only", ...}})."""
    groups: dict[str, list[float]] = defaultdict(list)
    for name, value in per_expression.items():
        meta = info.get(f"{split}/{name}")
        if meta is None:
            continue
        groups["motion_only" if meta.get("motion_only") else "not_motion_only"].append(value)
        groups[f"kind:{meta.get('kind', '?')}"].append(value)
    return {k: {"J&F": float(np.mean(v)), "count": len(v)} for k, v in sorted(groups.items())}


def write_ground_truth(reader, out_dir) -> Path:
    """Ground truth of an annotated reader in the submission layout (`Annotations/<video>/<exp_id>/<frame>.png`,
    0/255, annotated frames only), what `score_ytvos` compares a prediction folder with."""
    root = Path(out_dir) / "Annotations"
    for exp in reader.expressions:
        if exp.obj_id is None:
            continue
        folder = root / exp.video / exp.exp_id
        for name in exp.frames:
            if reader.annotation_path(exp.video, name) is not None:
                folder.mkdir(parents=True, exist_ok=True)
                mask = reader.load_mask(exp.video, name, exp.obj_id)
                Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{name}.png")
    return Path(out_dir)


def score_predictions(reader, data_dir, pred_dir, info: dict | None = None) -> dict[str, Any]:
    """Score a submission folder with the offline scorer (`score_ytvos`): against DATA/<split>_gt (the synthetic
    set's `valid_gt/`) when it exists, otherwise against ground truth written from the reader's annotations
    into a temporary folder. Adds "per_expression" J&F and, with `info`, the `breakdown`."""
    gt_dir = Path(data_dir) / f"{reader.split}_gt"
    if gt_dir.is_dir():
        result, rows = score_ytvos(gt_dir, pred_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="rvos_gt") as tmp:
            result, rows = score_ytvos(write_ground_truth(reader, tmp), pred_dir)
    result["per_expression"] = {name: (j + f) / 2 for name, j, f in rows}
    if info is not None:
        result["breakdown"] = breakdown(result["per_expression"], info, reader.split)
    return result


def jf_table(results: dict[str, dict[str, Any]]) -> str:
    """Plain-text table: one row per split (J&F, J, F means and recalls, in percent)."""
    cols = ["J&F-Mean", "J-Mean", "J-Recall", "F-Mean", "F-Recall"]
    lines = [f"{'split':<10}" + "".join(f"{c:>10}" for c in cols) + f"{'n':>7}"]
    for split, r in results.items():
        lines.append(f"{split:<10}" + "".join(f"{100 * r[c]:>10.2f}" for c in cols) + f"{r['num_expressions']:>7}")
        for group, g in r.get("breakdown", {}).items():
            lines.append(f"  {group:<20} J&F {100 * g['J&F']:6.2f}  ({g['count']} expressions)")
    return "\n".join(lines)
