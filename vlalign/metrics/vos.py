"""DAVIS region (J) and boundary (F) measures and the two DAVIS-2017 protocols, as the official
davis2017-evaluation code (commit ac7c43f) computes them, to the digit.

Per frame, with binary ground truth G and prediction P (void pixels removed from both when given):

    J = |G ∩ P| / |G ∪ P|, and 1 when the union is empty
    F = 2 p r / (p + r) of the boundary precision p and recall r, 0 when p + r = 0

Boundaries follow the official `_seg2bmap` (a pixel is on the boundary when it differs from its east, south or
south-east neighbour; the last row looks east only, the last column south only, the corner is 0). A boundary
pixel matches when the other mask's boundary lies in a disk of radius `bound_pix` around it, bound_pix =
ceil(0.008 * image diagonal) (8 px at 480x854). No boundary in P but some in G: p = 1, r = 0; some in P and none
in G: p = 0, r = 1; none in either: p = r = 1.

Per object over its frames (`db_statistics`): Mean, Recall = share of frames > 0.5, Decay = mean of the first
quarter minus mean of the last quarter (the official, overlapping bins). Globally: each statistic averaged over
all objects of all sequences, J&F-Mean = (J-Mean + F-Mean) / 2.

Speed: the official code dilates both full frames for every pair. Here each mask is reduced once per frame to
crops around its box (mask, boundary, dilated boundary) and every pair only counts pixels where two crops
overlap; the values are identical (tests compare with a plain full-frame implementation).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

BOUND_TH = 0.008
VOID_LABEL = 255
MAX_PROPOSALS = 20  # unsupervised task: the official evaluation refuses more object ids per sequence
TASKS = ("unsupervised", "semi-supervised")
GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


def bound_pixels(shape: tuple[int, int], bound_th: float = BOUND_TH) -> int:
    """Tolerance radius in pixels: `bound_th` itself when >= 1, else ceil(bound_th * diagonal of HxW)."""
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise ValueError(f"bound_th >= 1 is a radius in pixels and must be whole, got {bound_th}")
        return int(bound_th)
    height, width = shape
    # sqrt of the exact integer sum, as np.linalg.norm(shape) computes it (hypot may differ in the last bit)
    return math.ceil(bound_th * math.sqrt(height * height + width * width))


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """Boundary map of the official `_seg2bmap`: (..., H, W) bool -> (..., H, W) bool, offset half a pixel
    toward the origin (the pixel before each edge, going east or south)."""
    m = np.asarray(mask, dtype=bool)
    east, south, south_east = (np.zeros_like(m) for _ in range(3))
    east[..., :, :-1] = m[..., :, 1:]
    south[..., :-1, :] = m[..., 1:, :]
    south_east[..., :-1, :-1] = m[..., 1:, 1:]
    diff_east = m ^ east
    bmap = diff_east | (m ^ south) | (m ^ south_east)
    bmap[..., -1, :] = diff_east[..., -1, :]
    bmap[..., :, -1] = (m ^ south)[..., :, -1]
    bmap[..., -1, -1] = False
    return bmap


def _disk(radius: int) -> np.ndarray:
    """(2r+1)x(2r+1) uint8 disk {x² + y² <= r²}, the same set as skimage.morphology.disk(r)."""
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def _dilate(bmap: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Binary dilation of a padded uint8 crop (padding >= kernel radius, so borders never matter) -> bool."""
    try:
        import cv2  # optional ([video] extra): about 10x faster than the shifts below
    except ImportError:
        r = kernel.shape[0] // 2
        out = np.zeros(bmap.shape, dtype=bool)
        src = bmap[r : bmap.shape[0] - r, r : bmap.shape[1] - r] != 0
        for dy, dx in zip(*np.nonzero(kernel)):  # OR of the crop shifted to every disk offset
            out[dy : dy + src.shape[0], dx : dx + src.shape[1]] |= src
        return out
    return cv2.dilate(bmap, kernel) != 0


@dataclass
class _Mask:
    """One binary mask of one frame as crops at offsets (y, x): the mask's box, its boundary, the dilated
    boundary. Everything J and F need; pairs only touch the overlap of two crops."""

    area: int = 0
    crop: np.ndarray | None = None
    off: tuple[int, int] = (0, 0)
    n_bound: int = 0
    bound: np.ndarray | None = None
    bound_off: tuple[int, int] = (0, 0)
    dil: np.ndarray | None = None
    dil_off: tuple[int, int] = (0, 0)


def _prepare(mask: np.ndarray, radius: int, kernel: np.ndarray) -> _Mask:
    """HxW bool -> _Mask. The boundary of the whole frame is nonzero only in the box grown by one pixel up/left
    (background pixel before an edge) and down/right (an all-zero row/column, where the last-row and last-column
    rules give 0 as the full frame would), so `seg2bmap` of that window equals the full frame's."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return _Mask()
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(mask[y0:y1].any(axis=0))
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    crop = mask[y0:y1, x0:x1]
    height, width = mask.shape
    wy0, wx0, wy1, wx1 = max(y0 - 1, 0), max(x0 - 1, 0), min(y1 + 1, height), min(x1 + 1, width)
    bound = seg2bmap(mask[wy0:wy1, wx0:wx1])
    n_bound = int(np.count_nonzero(bound))
    dil = _dilate(np.pad(bound.astype(np.uint8), radius), kernel) if n_bound else None
    return _Mask(int(np.count_nonzero(crop)), crop, (y0, x0), n_bound, bound, (wy0, wx0), dil,
                 (wy0 - radius, wx0 - radius))  # fmt: skip


def _overlap_count(a: np.ndarray, a_off: tuple[int, int], b: np.ndarray, b_off: tuple[int, int]) -> int:
    """Number of pixels set in both crops a and b (placed at their frame offsets)."""
    y0, x0 = max(a_off[0], b_off[0]), max(a_off[1], b_off[1])
    y1 = min(a_off[0] + a.shape[0], b_off[0] + b.shape[0])
    x1 = min(a_off[1] + a.shape[1], b_off[1] + b.shape[1])
    if y1 <= y0 or x1 <= x0:
        return 0
    sa = a[y0 - a_off[0] : y1 - a_off[0], x0 - a_off[1] : x1 - a_off[1]]
    sb = b[y0 - b_off[0] : y1 - b_off[0], x0 - b_off[1] : x1 - b_off[1]]
    return int(np.count_nonzero(sa & sb))


def _pair(gt: _Mask, pred: _Mask) -> tuple[float, float]:
    """(J, F) of one prediction against one ground truth, both prepared on the same frame."""
    inter = _overlap_count(gt.crop, gt.off, pred.crop, pred.off) if gt.area and pred.area else 0
    union = gt.area + pred.area - inter
    j = 1.0 if union == 0 else inter / union
    n_fg, n_gt = pred.n_bound, gt.n_bound
    if n_fg == 0 or n_gt == 0:  # the official edge cases
        precision, recall = (1.0, 0.0) if n_gt else ((0.0, 1.0) if n_fg else (1.0, 1.0))
    else:
        precision = _overlap_count(pred.bound, pred.bound_off, gt.dil, gt.dil_off) / float(n_fg)
        recall = _overlap_count(gt.bound, gt.bound_off, pred.dil, pred.dil_off) / float(n_gt)
    f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return j, f


def _frame_masks(masks: Sequence[np.ndarray], void: np.ndarray | None, bound_th: float) -> list[_Mask]:
    if not masks:
        return []
    radius = bound_pixels(masks[0].shape, bound_th)
    kernel = _disk(radius)
    keep = None if void is None or not void.any() else ~np.asarray(void, dtype=bool)
    return [_prepare(m if keep is None else m & keep, radius, kernel) for m in masks]


def pairwise_jf(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None,
                bound_th: float = BOUND_TH) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """J and F of every prediction against every ground truth on one frame.

    gt NxHxW bool, pred KxHxW bool, void HxW bool or None. Returns (J, F), each KxN float64.
    """
    g = _frame_masks([np.asarray(m, dtype=bool) for m in gt], void, bound_th)
    p = _frame_masks([np.asarray(m, dtype=bool) for m in pred], void, bound_th)
    out = np.zeros((2, len(p), len(g)))
    for k, pm in enumerate(p):
        for n, gm in enumerate(g):
            out[:, k, n] = _pair(gm, pm)
    return out[0], out[1]


def boundary_f(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None,
               bound_th: float = BOUND_TH) -> np.ndarray:  # fmt: skip
    """F per frame: gt, pred (and void) (..., H, W) bool -> (...) float64."""
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape or gt.ndim < 2:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} must have the same (..., H, W) shape")
    voids = np.broadcast_to(np.zeros((), bool) if void is None else np.asarray(void, dtype=bool), gt.shape)
    flat = [(g, p, v) for g, p, v in zip(gt.reshape(-1, *gt.shape[-2:]), pred.reshape(-1, *gt.shape[-2:]),
                                         voids.reshape(-1, *gt.shape[-2:]))]  # fmt: skip
    values = [_pair(*_frame_masks([g, p], v, bound_th))[1] for g, p, v in flat]
    return np.asarray(values, dtype=np.float64).reshape(gt.shape[:-2])


def region_similarity(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> np.ndarray:
    """J per frame: gt, pred (and void) (..., H, W) bool -> (...) float64; 1 where the union is empty."""
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} must have the same shape")
    if void is not None:
        keep = ~np.asarray(void, dtype=bool)
        gt, pred = gt & keep, pred & keep
    inter = np.count_nonzero(gt & pred, axis=(-2, -1))
    union = np.count_nonzero(gt | pred, axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def db_statistics(values: np.ndarray) -> tuple[float, float, float]:
    """(Mean, Recall, Decay) of one object's per-frame values (T,), as the official `db_statistics`.

    NaN frames are left out of the means but count as misses in Recall (NaN > 0.5 is False). The four decay
    bins share their edge frames. (The official code stores the bin edges as uint8, which wraps for sequences
    over 256 frames; the intended edges are used here, identical up to 256 frames.)
    """
    v = np.asarray(values, dtype=np.float64)
    edges = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(np.int64)
    with warnings.catch_warnings():  # empty or all-NaN input gives NaN, as in the official code
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, recall = np.nanmean(v), np.nanmean(v > 0.5)
        decay = np.nanmean(v[edges[0] : edges[1] + 1]) - np.nanmean(v[edges[3] : edges[4] + 1])
    return float(mean), float(recall), float(decay)


def _label_masks(labels: np.ndarray, count: int) -> list[np.ndarray]:
    return [labels == i for i in range(1, count + 1)]


def evaluate_sequence(gt_labels: np.ndarray, pred_labels: np.ndarray, task: str = "unsupervised",
                      bound_th: float = BOUND_TH) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Per-object, per-frame J and F of one DAVIS sequence under the official protocol of `task`.

    gt_labels, pred_labels: TxHxW integer label maps (0 background, object i has id i; 255 in the ground truth
    is void). The ground truth has as many objects as the largest id of its *first* frame (official rule).
    - semi-supervised: the first and last frames are not scored, prediction i is ground-truth object i, void
      pixels count as background; more predicted ids than objects is an error.
    - unsupervised: every frame is scored with void pixels removed, at most 20 predicted ids; proposals are
      assigned to objects by the Hungarian method on the sequence mean of (J + F) / 2 per pair.
    Missing ids count as empty masks. Returns (J, F), each NxT' float64, rows in the official order (for the
    unsupervised task: ordered by the matched proposal's id, which is how the official tables name objects).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    gt, pred = np.asarray(gt_labels), np.asarray(pred_labels)
    if gt.shape != pred.shape or gt.ndim != 3 or len(gt) == 0:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} must be the same non-empty TxHxW")
    void = gt == VOID_LABEL
    gt = np.where(void, 0, gt)
    num_gt = int(gt[0].max())
    if task == "semi-supervised":
        gt, pred, void = gt[1:-1], pred[1:-1], None
    num_pred = int(pred.max()) if pred.size else 0
    if task == "semi-supervised" and num_pred > num_gt:
        raise ValueError(f"prediction has object id {num_pred} but the ground truth has {num_gt} objects")
    if task == "unsupervised" and num_pred > MAX_PROPOSALS:
        raise ValueError(f"prediction has object id {num_pred}; the unsupervised task allows {MAX_PROPOSALS}")
    num_k, frames = max(num_pred, num_gt), len(gt)
    scores = np.zeros((2, num_k, num_gt, frames))  # (J/F, proposal, object, frame) as the official arrays
    for t in range(frames):
        g = _frame_masks(_label_masks(gt[t], num_gt), None if void is None else void[t], bound_th)
        p = _frame_masks(_label_masks(pred[t], num_k), None if void is None else void[t], bound_th)
        pairs = zip(range(num_gt), range(num_gt)) if task == "semi-supervised" else np.ndindex(num_k, num_gt)
        for k, n in pairs:
            scores[:, k, n, t] = _pair(g[n], p[k])
    if task == "semi-supervised":
        idx = np.arange(num_gt)
        return scores[0, idx, idx], scores[1, idx, idx]
    try:
        from scipy.optimize import linear_sum_assignment  # the official matcher
    except ImportError as err:
        raise ImportError("the unsupervised DAVIS task needs SciPy (Hungarian matching): pip install scipy") from err

    rows, cols = linear_sum_assignment(-(scores[0].mean(axis=2) + scores[1].mean(axis=2)) / 2)
    return scores[0, rows, cols], scores[1, rows, cols]


def summarize(objects: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> tuple[dict[str, float], list[tuple]]:
    """Global table and per-object rows from {name: (J (T,), F (T,))} (names like "<sequence>_<i>").

    Returns ({"J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"} as floats,
    [(name, J-Mean, F-Mean), ...] in the given order).
    """
    if not objects:
        raise ValueError("no objects to score: every ground-truth sequence is empty")
    j_stats = np.array([db_statistics(j) for j, _ in objects.values()])  # (objects, 3): M, R, D
    f_stats = np.array([db_statistics(f) for _, f in objects.values()])
    # one contiguous column at a time: numpy then sums in the same order as the official np.mean(list)
    jm, jr, jd, fm, fr, fd = (np.mean(np.ascontiguousarray(s[:, i])) for s in (j_stats, f_stats) for i in range(3))
    values = [(jm + fm) / 2.0, jm, jr, jd, fm, fr, fd]
    rows = [(name, float(j[0]), float(f[0])) for name, j, f in zip(objects, j_stats, f_stats)]
    return dict(zip(GLOBAL_COLUMNS, map(float, values))), rows


def average_annotators(results: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Ref-DAVIS17: the mean of each metric over the per-annotator results (usually 4 global tables)."""
    if not results:
        raise ValueError("no annotator results to average")
    keys = [k for k, v in results[0].items() if isinstance(v, float)]
    for i, r in enumerate(results):
        if missing := [k for k in keys if k not in r]:
            raise ValueError(f"annotator result {i} lacks {missing}")
    return {k: float(np.mean([r[k] for r in results])) for k in keys}
