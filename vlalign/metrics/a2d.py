"""A2D-Sentences / JHMDB-Sentences metrics: the protocol of MTTR `metrics.py` (also ReferFormer `a2d_eval.py`).

One sample = one annotated frame of one referred instance, with one ground-truth mask and Q >= 1 scored
predicted masks. With the highest-scoring prediction P and ground truth G:

    I = |P ∩ G|,  U = |P ∪ G|,  IoU = (I + 1e-6) / (U + 1e-6)
    oIoU = Σ I / Σ U        mIoU = mean IoU        P@k = share of samples with IoU > k (strictly), k = 0.5 .. 0.9

mAP@0.5:0.95 (and AP@0.5, AP@0.75) comes from pycocotools `COCOeval(iouType="segm")` with `useCats = 0`: each
sample is a COCO image holding its one ground-truth instance, every given prediction is a detection with its
score, category 1. Note: the mAP depends on how many predictions per sample are given (ReferFormer passes all
its queries, MTTR the same; keeping only the best lowers it): report which.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
SMOOTH = 1e-6  # MTTR's compute_iou smoothing: an empty prediction of an empty target scores 1


def sample_iou(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, float]:
    """(I, U, IoU) of one HxW prediction against its HxW ground truth (bool or {0, 1})."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    inter, union = int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))
    return inter, union, (inter + SMOOTH) / (union + SMOOTH)


def _rle(mask: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    rle["counts"] = rle["counts"].decode("ascii")  # json-able, as in the reference submissions
    return rle


def coco_map(gt_masks: Sequence[np.ndarray], pred_masks: Sequence[np.ndarray],
             pred_scores: Sequence[np.ndarray]) -> tuple[float, float, float]:  # fmt: skip
    """(mAP@0.5:0.95, AP@0.5, AP@0.75) from COCOeval on masks, categories ignored.

    gt_masks: per sample HxW; pred_masks: per sample QxHxW; pred_scores: per sample (Q,).
    """
    images, annotations, detections = [], [], []
    for i, (gt, masks, scores) in enumerate(zip(gt_masks, pred_masks, pred_scores), start=1):
        gt = np.asarray(gt, dtype=bool)
        rle = _rle(gt)
        images.append({"id": i, "height": gt.shape[0], "width": gt.shape[1]})
        annotations.append({"id": i, "image_id": i, "category_id": 1, "segmentation": rle, "iscrowd": 0,
                            "area": float(coco_mask.area(rle)), "bbox": coco_mask.toBbox(rle).tolist()})  # fmt: skip
        detections += [{"image_id": i, "category_id": 1, "segmentation": _rle(np.asarray(m, dtype=bool)),
                        "score": float(s)} for m, s in zip(masks, scores)]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and the summary table
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(detections) if detections else COCO()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
        evaluator.params.useCats = 0
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0]), float(evaluator.stats[1]), float(evaluator.stats[2])


def evaluate_a2d(gt_masks: Sequence[np.ndarray], pred_masks: Sequence[np.ndarray],
                 pred_scores: Sequence[np.ndarray], with_map: bool = True) -> dict[str, float | int]:  # fmt: skip
    """The A2D / JHMDB metrics of N samples.

    gt_masks: N masks HxW (sizes may differ between samples); pred_masks: N arrays QxHxW (Q >= 1 may differ);
    pred_scores: N arrays (Q,). Returns {"mAP", "AP50", "AP75", "oIoU", "mIoU", "P@0.5" ... "P@0.9",
    "num_samples"} as fractions (the mAP keys only when `with_map`).
    """
    if not (len(gt_masks) == len(pred_masks) == len(pred_scores)) or not gt_masks:
        raise ValueError(f"need the same, nonzero number of ground truths ({len(gt_masks)}), prediction sets "
                         f"({len(pred_masks)}) and score sets ({len(pred_scores)})")  # fmt: skip
    inters, unions, ious = [], [], []
    for i, (gt, masks, scores) in enumerate(zip(gt_masks, pred_masks, pred_scores)):
        masks, scores = np.asarray(masks), np.asarray(scores, dtype=np.float64).reshape(-1)
        if masks.ndim != 3 or len(masks) == 0 or len(masks) != len(scores):
            raise ValueError(f"sample {i}: expected QxHxW masks with Q >= 1 and Q scores, got masks "
                             f"{masks.shape} and {scores.shape[0]} scores")  # fmt: skip
        inter, union, iou = sample_iou(masks[int(np.argmax(scores))], gt)
        inters.append(inter)
        unions.append(union)
        ious.append(iou)
    ious_arr = np.asarray(ious)
    result: dict[str, float | int] = {}
    if with_map:
        result["mAP"], result["AP50"], result["AP75"] = coco_map(gt_masks, pred_masks, pred_scores)
    result["oIoU"] = float(sum(inters) / sum(unions)) if sum(unions) else 1.0
    result["mIoU"] = float(ious_arr.mean())
    result.update({f"P@{k}": float(np.mean(ious_arr > k)) for k in THRESHOLDS})
    result["num_samples"] = len(ious)
    return result
