"""Referring image segmentation metrics (the RIS protocol) and an offline scorer for PNG predictions.

Per expression i, with binary prediction P_i and ground truth G_i at the same resolution:

    I_i = |P_i ∩ G_i|,  U_i = |P_i ∪ G_i|,  IoU_i = I_i / U_i
    mIoU = mean_i IoU_i          oIoU = Σ_i I_i / Σ_i U_i          prec@X = share of i with IoU_i >= X

(`>=` as in LAVT `test.py`; CRIS uses `>`; CRIS's reported "IoU" is mIoU, LAVT's is oIoU.) Always report both,
and where they were computed: LAVT scores 480x480 resized ground truth, CRIS and EFN the original resolution.

Empty union (prediction and ground truth both empty): IoU_i = 1, the prediction is exactly right; the sample
adds 0 to both sums of oIoU, and if every union is empty oIoU = 1 too. LAVT counts such a sample as 0 and CRIS
as 0 / 1e-6 = 0; RefCOCO ground truths are never empty, so the choice does not move published numbers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlalign.data.images import load_mask_png
from vlalign.metrics.dist import gather_records

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
Mask = np.ndarray | torch.Tensor


def _as_tensor(x: Mask) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))  # no copy for the usual contiguous array
    return torch.as_tensor(x)


def _binary(x: torch.Tensor, what: str, ids: Sequence[Hashable]) -> torch.Tensor:
    """BxHxW bool from bool or {0, 1} values; other values (logits, 0/255) are an error, not a guess."""
    if x.dtype == torch.bool:
        return x
    bad = ((x != 0) & (x != 1)).flatten(1).any(1)
    if bad.any():
        k = int(bad.nonzero()[0])
        raise ValueError(
            f"{what} for id {ids[k]!r} has values outside {{0, 1}} (min {x[k].min().item()}, "
            f"max {x[k].max().item()}); pass bool masks (threshold logits, map 255 to 1) first"
        )
    return x != 0


def intersection_union(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel counts I and U, each shape (B,), of bool masks pred and gt, both BxHxW."""
    return (pred & gt).flatten(1).sum(1), (pred | gt).flatten(1).sum(1)


def iou(inter: int, union: int) -> float:
    """I / U, and 1.0 for an empty union (see the module docstring)."""
    return inter / union if union else 1.0


class RefSegEvaluator:
    """Accumulates per-expression intersection and union; reset / process / evaluate.

    Records are keyed by a per-expression id (use sent_id: several sentences share one ref_id). Under
    torch.distributed, `evaluate` and `per_sample` are collective calls: every rank must call them; they
    gather all ranks' records, drop the duplicates that DistributedSampler's padding creates, and return the
    same result on every rank.

    Args:
        resolution: where the masks were compared, reported with the numbers: "original" or e.g.
            "input 480x480".
        thresholds: IoU thresholds X of the prec@X metrics.
    """

    def __init__(self, resolution: str = "original", thresholds: Sequence[float] = THRESHOLDS) -> None:
        self.resolution = resolution
        self.thresholds = tuple(float(t) for t in thresholds)
        self.reset()

    def reset(self) -> None:
        self._records: list[tuple[Hashable, tuple[int, int]]] = []  # (id, (I, U)) in processing order

    def process(
        self, preds: Sequence[Mask] | Mask, gts: Sequence[Mask] | Mask, ids: Sequence[Hashable]
    ) -> None:
        """Score one batch.

        Args:
            preds: BxHxW tensor / array, or a list of HxW masks (sizes may differ between samples); bool or
                {0, 1}.
            gts: ground truths, same layout and shapes as `preds`.
            ids: B per-expression ids.
        """
        ids = list(ids)
        if not len(preds) == len(gts) == len(ids):
            raise ValueError(f"got {len(preds)} predictions, {len(gts)} ground truths and {len(ids)} ids")
        batched = isinstance(preds, np.ndarray | torch.Tensor) and isinstance(gts, np.ndarray | torch.Tensor)
        if batched:
            groups = [(preds, gts, ids)]  # one vectorised call for the whole batch
        else:
            groups = [(p, g, [i]) for p, g, i in zip(preds, gts, ids)]  # sizes may differ per sample
        layout = "BxHxW" if batched else "HxW"
        for p, g, group_ids in groups:
            p, g = _as_tensor(p), _as_tensor(g)
            if p.shape != g.shape or p.dim() != len(layout.split("x")):
                shown = group_ids if len(group_ids) <= 5 else [*group_ids[:5], "..."]
                raise ValueError(
                    f"prediction shape {tuple(p.shape)} and ground-truth shape {tuple(g.shape)} for id(s) "
                    f"{', '.join(map(repr, shown))}: expected {layout} masks of the same shape"
                )
            if not batched:
                p, g = p[None], g[None]
            p = _binary(p, "prediction", group_ids)
            g = _binary(g.to(p.device), "ground truth", group_ids)
            inter, union = intersection_union(p, g)
            self._records.extend(zip(group_ids, zip(inter.tolist(), union.tolist())))

    def _gathered(self) -> dict[Hashable, tuple[int, int]]:
        return gather_records(self._records, what="(intersection, union)")

    def per_sample(self) -> dict[Hashable, tuple[int, int, float]]:
        """{id: (I, U, IoU)} over all ranks, duplicates removed. Collective under torch.distributed."""
        return {k: (i, u, iou(i, u)) for k, (i, u) in self._gathered().items()}

    def evaluate(self) -> dict[str, Any]:
        """mIoU, oIoU, prec@X (fractions in [0, 1]), num_samples, resolution. Collective when distributed."""
        records = self._gathered()
        if not records:
            raise ValueError("RefSegEvaluator.evaluate: no samples were processed")
        ious = [iou(i, u) for i, u in records.values()]
        sum_i = sum(i for i, _ in records.values())  # Python ints: exact at any data set size
        sum_u = sum(u for _, u in records.values())
        result: dict[str, Any] = {"mIoU": math.fsum(ious) / len(ious), "oIoU": iou(sum_i, sum_u)}
        for t in self.thresholds:
            # I/U is correctly rounded, so IoU exactly X (e.g. 3/5 vs 0.6) compares equal and counts as a hit.
            result[f"prec@{t:g}"] = sum(v >= t for v in ious) / len(ious)
        result["num_samples"] = len(ious)
        result["resolution"] = self.resolution
        return result


def read_prediction_png(path: str | os.PathLike[str], size_hw: tuple[int, int]) -> np.ndarray:
    """HxW bool mask from a prediction PNG at the original image size; nonzero = foreground.

    Read with `vlalign.data.images.load_mask_png`: "1" / "L" by pixel value, "P" by palette index (0 =
    background, as in DAVIS-style palette PNGs), "RGB" by any nonzero channel (alpha is ignored).

    Raises:
        ValueError: unreadable or corrupt file (`ImageError`) or a size other than `size_hw`, naming the file.
    """
    mask = load_mask_png(path)
    if mask.shape != tuple(size_hw):
        (h, w), (eh, ew) = mask.shape, size_hw
        raise ValueError(
            f"prediction {path} is {w}x{h} (WxH), expected {ew}x{eh}, the original image size; predictions "
            "are scored at the original resolution (invert the input transform first)"
        )
    return mask != 0


def _missing_message(missing: list[Hashable], total: int, pred_dir: Path, limit: int = 20) -> str:
    shown = ", ".join(str(m) for m in missing[:limit])
    more = f" ... and {len(missing) - limit} more" if len(missing) > limit else ""
    return (
        f"{len(missing)} of {total} predictions missing in {pred_dir} (expected <sent_id>.png for every "
        f"sentence of the split): {shown}{more}"
    )


def score_predictions(
    data_dir: str | os.PathLike[str],
    split: str,
    pred_dir: str | os.PathLike[str],
    *,
    split_by: str = "unc",
) -> dict[str, Any]:
    """Score a folder of PNG predictions against a refer-format split, at the original resolution.

    `pred_dir` holds one `<sent_id>.png` per sentence of the split, at the original image size (see
    `read_prediction_png` for the accepted modes). Other files are ignored; unused `.png` files are counted
    in `num_extra_predictions`.

    Returns:
        mIoU, oIoU, prec@0.5 ... prec@0.9, num_samples, resolution ("original"), split, split_by,
        num_extra_predictions.

    Raises:
        FileNotFoundError: `pred_dir` is not a directory.
        ValueError: predictions missing (the error lists their ids), of the wrong size, or unreadable.
    """
    # Imported here so that the metrics do not pull in the data stack (and cannot form an import cycle).
    from vlalign.data.refer import ReferDataset

    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction directory not found: {pred_dir}")
    names = {e.name for e in os.scandir(pred_dir) if e.is_file()}  # one listing, not a stat per sentence
    dataset = ReferDataset(data_dir, split, split_by=split_by, mode="eval")
    expected = {sent_id: f"{sent_id}.png" for sent_id in dataset.sent_ids}
    # Checked before decoding any mask, so a wrong folder fails at once and lists every missing id.
    missing = [sent_id for sent_id, name in expected.items() if name not in names]
    if missing:
        raise ValueError(_missing_message(missing, len(expected), pred_dir))
    evaluator = RefSegEvaluator(resolution="original")
    for sent_id, gt in dataset.eval_targets():
        pred = read_prediction_png(pred_dir / expected[sent_id], gt.shape)
        evaluator.process([pred], [gt != 0], [sent_id])
    result = evaluator.evaluate()
    result.update(
        split=split,
        split_by=split_by,
        num_extra_predictions=len({n for n in names if n.endswith(".png")} - set(expected.values())),
    )
    return result
