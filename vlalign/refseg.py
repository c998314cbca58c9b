"""Referring image segmentation as a task: train, evaluate and visualise any segmenter on refer-format data.

Shared by every referring image segmentation model (AlignFormer, EFN): the model only has to follow the
forward contract of ARCHITECTURE.md. Nothing here parses command lines.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from vlalign.data.collate import make_collate
from vlalign.data.flip import HorizontalFlip
from vlalign.data.images import load_image
from vlalign.data.refer import ReferDataset
from vlalign.data.transforms import ResizeSquare, invert_prediction
from vlalign.engine import TrainConfig, train
from vlalign.metrics.refseg import RefSegEvaluator, iou
from vlalign.visualize import captioned, overlay_mask, side_by_side

EVAL_SPLITS = {"unc": ("val", "testA", "testB"), "umd": ("val", "test"), "google": ("val",)}


def eval_dataset(data_dir, split: str, input_size: int, *, split_by: str = "unc", image_dir=None) -> ReferDataset:
    return ReferDataset(data_dir, split, split_by=split_by, image_dir=image_dir, mode="eval",
                        transform=ResizeSquare(input_size))


@torch.no_grad()
def evaluate_refseg(model: torch.nn.Module, dataset, *, resolution: str = "original", batch_size: int = 16,
                    max_samples: int | None = None, threshold: float = 0.5,
                    info: dict | None = None) -> dict[str, Any]:
    """mIoU / oIoU / Prec@X of `model` on an eval-mode dataset.

    info: a synthetic set's `synth_info.json` contents; adds "breakdown", mIoU / oIoU per expression form.

    resolution="original" maps each prediction back to the image's own size and compares with the original
    ground truth (EFN/CRIS protocol); "input" compares at the model's input size with the resized ground truth
    (LAVT protocol). Under torch.distributed each rank scores a strided share and the evaluator reduces.
    """
    if resolution not in ("original", "input"):
        raise ValueError(f"resolution must be 'original' or 'input', got {resolution!r}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    indices = list(range(len(dataset)))[: max_samples or None]
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) \
        if torch.distributed.is_available() and torch.distributed.is_initialized() else (0, 1)
    shard = Subset(dataset, indices[rank::world])
    loader = DataLoader(shard, batch_size=batch_size, collate_fn=make_collate(model.tokenize))
    size = getattr(getattr(model, "config", None), "input_size", None)
    label = "original" if resolution == "original" else f"input {size}x{size}"
    evaluator = RefSegEvaluator(resolution=label)
    for batch in loader:
        logits = model(batch["image"].to(device), batch["tokens"].to(device), batch["token_mask"].to(device))
        logits = logits["logits"].float().cpu()
        if resolution == "input":
            evaluator.process(logits > 0, batch["mask"] > 0.5, batch["sent_id"])
            continue
        preds = [invert_prediction(lg.sigmoid(), p) > threshold for lg, p in zip(logits, batch["transform"])]
        evaluator.process(preds, batch["orig_mask"], batch["sent_id"])
    model.train(was_training)
    result = evaluator.evaluate()
    if info is not None:
        result["breakdown"] = form_breakdown(evaluator.per_sample(), info)
    return result


def form_breakdown(per_sample: dict[Any, tuple[int, int, float]], info: dict[str, dict]) -> dict[str, Any]:
    """{"form:<form>": {"mIoU", "oIoU", "count"}} from per-sentence (I, U, IoU) and synth_info.json
    ({"<sent_id>": {"form", ...}}); sentences the info does not know are left out."""
    groups: dict[str, list[tuple[int, int, float]]] = defaultdict(list)
    for sent_id, record in per_sample.items():
        meta = info.get(str(sent_id))
        if meta is None:
            continue
        if not isinstance(meta, dict) or "form" not in meta:
            raise ValueError(f"synth_info entry {sent_id!r}: expected an object with a 'form', got {meta!r}")
        groups[f"form:{meta['form']}"].append(record)
    return {name: {"mIoU": sum(r[2] for r in rows) / len(rows),
                   "oIoU": iou(sum(r[0] for r in rows), sum(r[1] for r in rows)), "count": len(rows)}
            for name, rows in sorted(groups.items())}


def train_refseg(model: torch.nn.Module, data_dir, config: TrainConfig, *, split_by: str = "unc", image_dir=None,
                 eval_samples: int = 300, seed: int = 0, shuffle_text: bool = False,
                 hflip: float = 0.0) -> dict[str, Any]:
    """Train `model` on the `train` split, evaluating on (up to `eval_samples` sentences of) `val`.

    Writes the run into `config.out_dir`; returns the engine's summary. The final model folder
    (`save_pretrained`) is written by the caller, so that library users choose where it goes.
    `shuffle_text=True` is the language ablation: every mask is paired with another ref's sentence.
    `hflip` > 0 mirrors each training sample with that probability, left/right swapped in its sentence
    (vlalign.data.flip).
    A model with a `prepare(train_set)` method gets it called first, before the optimizer sees its parameters
    (EFN builds its word vocabulary from the training expressions there).
    """
    size = model.config.input_size
    train_set = ReferDataset(data_dir, "train", split_by=split_by, image_dir=image_dir, mode="train",
                             transform=ResizeSquare(size), seed=seed)
    if hasattr(model, "prepare"):
        model.prepare(train_set)
    if shuffle_text:
        train_set = ShuffledText(train_set, seed)
    if hflip > 0:
        train_set = HorizontalFlip(train_set, hflip, seed)
    val_set = eval_dataset(data_dir, "val", size, split_by=split_by, image_dir=image_dir)

    def evaluate(m):
        metrics = evaluate_refseg(m, val_set, max_samples=eval_samples)
        return {f"val_{k}": v for k, v in metrics.items() if isinstance(v, int | float)}

    summary = train(model, train_set, config, collate_fn=TrainCollate(model.tokenize), evaluate=evaluate,
                    param_groups=getattr(model, "param_groups", lambda: None)())
    # What the model card says (save_pretrained reads it; vlalign/hub.py): the data, the protocol and the
    # last validation numbers of training; full evaluations are added with hub.update_model_card.
    model.card_info = card_info(data_dir, split_by, len(train_set), summary, config, shuffle_text, eval_samples,
                                hflip)
    return summary


def card_info(data_dir, split_by: str, num_train: int, summary: dict[str, Any], config: TrainConfig,
              shuffle_text: bool, eval_samples: int, hflip: float = 0.0) -> dict[str, Any]:
    """Model-card entries of a referring segmentation training run (data, protocol, training, metrics)."""
    splits = ", ".join(EVAL_SPLITS.get(split_by, ("val",)))
    val = {k.removeprefix("val_"): v for k, v in (summary.get("eval") or {}).items() if k.startswith("val_")}
    return {
        "dataset": Path(data_dir).name,
        "data": f"Refer-format data `{Path(data_dir).name}` (split_by `{split_by}`), trained on the `train` split "
                f"({num_train} referred objects, one sentence drawn per object and epoch)"
                + (" with the language ablation (each mask paired with another object's sentence)" if shuffle_text
                   else "")
                + (f", each sample mirrored with probability {hflip} (left/right swapped in its sentence)" if hflip
                   else "") + ".",
        "protocol": f"mIoU, oIoU and Prec@0.5-0.9 over every sentence of the evaluation splits ({splits}), "
                    "predictions mapped back to each image's original resolution (EFN/CRIS protocol; "
                    "`vlalign eval --resolution input` gives the LAVT protocol at the input size).",
        "training": {"iterations": summary.get("iteration"), "batch size": config.batch_size, "lr": config.lr,
                     "schedule": config.schedule, "seed": config.seed},
        **({"metrics": {f"val (first {eval_samples} sentences, end of training)": val}} if val else {}),
    }


class ShuffledText(torch.utils.data.Dataset):
    """Language ablation: item i keeps its image and mask but takes the sentence of item perm[i], a fixed random
    permutation, so the sentences' distribution is unchanged while their link to the target is broken."""

    def __init__(self, dataset: ReferDataset, seed: int = 0) -> None:
        self.dataset = dataset
        self.perm = np.random.default_rng((seed, 7919)).permutation(len(dataset))

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.dataset[index], "text": self.dataset.text(int(self.perm[index]))}


class TrainCollate:
    """Referring collate that also hands the mask to the model as its `target` (picklable for workers)."""

    def __init__(self, tokenize) -> None:
        self.collate = make_collate(tokenize)

    def __call__(self, samples: list[dict]) -> dict:
        batch = self.collate(samples)
        batch["target"] = batch["mask"]
        return batch


def metric_table(results: dict[str, dict[str, Any]]) -> str:
    """Plain-text table: one row per split, mIoU, oIoU and Prec@X in percent."""
    cols = ["mIoU", "oIoU", "prec@0.5", "prec@0.6", "prec@0.7", "prec@0.8", "prec@0.9"]
    lines = [f"{'split':<8}" + "".join(f"{c:>10}" for c in cols) + f"{'n':>7}  resolution"]
    for split, m in results.items():
        lines.append(f"{split:<8}" + "".join(f"{100 * m[c]:>10.2f}" for c in cols)
                     + f"{m['num_samples']:>7}  {m['resolution']}")
        for name, g in m.get("breakdown", {}).items():
            blank = " " * 10 * (len(cols) - 2)  # mIoU and oIoU only; the Prec@X columns stay empty
            lines.append(f"  {name:<16}{100 * g['mIoU']:>10.2f}{100 * g['oIoU']:>10.2f}{blank}{g['count']:>7}")
    return "\n".join(lines)


def write_overlays(model: torch.nn.Module, dataset: ReferDataset, out_dir, *, count: int = 12,
                   seed: int = 0) -> list[Path]:
    """For `count` random sentences: the image with the prediction (left) next to the ground truth (right)."""
    from vlalign.predictor import ReferringSegmenter

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    predictor = ReferringSegmenter(model)
    rng = np.random.default_rng(seed)
    written = []
    for index in sorted(rng.choice(len(dataset), size=min(count, len(dataset)), replace=False)):
        sample = dataset[int(index)]
        image = load_image(dataset.image_info(sample["image_id"])["path"])
        predictor.set_image(image)
        pred = predictor.predict(sample["text"])
        gt = sample["orig_mask"].astype(bool)
        inter, union = (pred & gt).sum(), (pred | gt).sum()
        iou = inter / union if union else 1.0
        panel = side_by_side(captioned(overlay_mask(image, pred), f"prediction IoU {iou:.2f}"),
                             captioned(overlay_mask(image, gt, color=(60, 180, 75)), "ground truth"))
        path = out / f"{sample['sent_id']}.png"
        captioned(panel, f'"{sample["text"]}"').save(path)
        written.append(path)
    return written


def write_json(path, payload: dict) -> None:
    """Atomic JSON write (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, default=_plain))
    os.replace(tmp, path)


def _plain(value):
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
