"""DAVIS J / F / statistics / protocols against hand-computed cases and a plain full-frame reference; A2D metrics."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from vlalign.metrics.a2d import evaluate_a2d
from vlalign.metrics.vos import (
    average_annotators,
    bound_pixels,
    boundary_f,
    db_statistics,
    evaluate_sequence,
    pairwise_jf,
    region_similarity,
    seg2bmap,
    summarize,
)

ndimage = pytest.importorskip("scipy.ndimage")
morphology = pytest.importorskip("skimage.morphology")


# ---- plain reference, written from the definitions: full frames, no crops, scikit-image dilation ------------------
def ref_bmap(m: np.ndarray) -> np.ndarray:
    m = m.astype(bool)
    h, w = m.shape
    b = np.zeros_like(m)
    for y in range(h):  # pixel by pixel on small frames only; larger ones use the vector form below
        for x in range(w):
            e = m[y, x + 1] if x + 1 < w else False
            s = m[y + 1, x] if y + 1 < h else False
            se = m[y + 1, x + 1] if x + 1 < w and y + 1 < h else False
            if y == h - 1 and x == w - 1:
                b[y, x] = False
            elif y == h - 1:
                b[y, x] = m[y, x] != e
            elif x == w - 1:
                b[y, x] = m[y, x] != s
            else:
                b[y, x] = m[y, x] != e or m[y, x] != s or m[y, x] != se
    return b


def ref_f(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None, bound_th: float = 0.008) -> float:
    if void is not None:
        gt, pred = gt & ~void, pred & ~void
    r = bound_th if bound_th >= 1 else math.ceil(bound_th * np.linalg.norm(gt.shape))
    fb, gb = seg2bmap(pred), seg2bmap(gt)  # seg2bmap itself is checked against ref_bmap below
    fd = ndimage.binary_dilation(fb, structure=morphology.disk(r))
    gd = ndimage.binary_dilation(gb, structure=morphology.disk(r))
    n_fg, n_gt = fb.sum(), gb.sum()
    if n_fg == 0 and n_gt > 0:
        p, rc = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        p, rc = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        p, rc = 1.0, 1.0
    else:
        p, rc = (fb & gd).sum() / float(n_fg), (gb & fd).sum() / float(n_gt)
    return 0.0 if p + rc == 0 else 2 * p * rc / (p + rc)


def blobs(rng: np.random.Generator, shape: tuple[int, int], thresh: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=min(shape) / 16)
    return field / field.std() > thresh  # several blobs, some cut by the frame's edges


# ---- J ---------------------------------------------------------------------------------------------------------------
def test_j_hand_cases() -> None:
    gt, pred = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    gt[0:2, 0:2], pred[0:2, 0:3] = True, True  # I = 4, U = 6
    assert region_similarity(gt, pred) == pytest.approx(4 / 6, abs=0)
    assert region_similarity(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0  # empty union
    assert region_similarity(gt, np.zeros((4, 4))) == 0.0
    void = np.zeros((4, 4), bool)
    void[:, 2] = True  # the extra column is void: perfect
    assert region_similarity(gt, pred, void) == 1.0
    assert region_similarity(np.stack([gt, gt]), np.stack([pred, gt])).tolist() == [4 / 6, 1.0]


# ---- boundaries and F ------------------------------------------------------------------------------------------------
def test_seg2bmap_rules() -> None:
    m = np.zeros((4, 4), bool)
    m[1, 1] = True  # the pixel and the three before it (west, north, north-west)
    assert np.argwhere(seg2bmap(m)).tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert not seg2bmap(np.ones((3, 3), bool)).any()  # a frame-filling mask has no boundary
    last_col = np.zeros((3, 3), bool)
    last_col[:, 2] = True  # the last column looks south only; the column before it sees the edge
    assert np.argwhere(seg2bmap(last_col)).tolist() == [[0, 1], [1, 1], [2, 1]]
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = rng.random((7, 9)) > 0.5
        np.testing.assert_array_equal(seg2bmap(m), ref_bmap(m))


def test_bound_pixels() -> None:
    assert bound_pixels((480, 854)) == 8 and bound_pixels((480, 910)) == 9
    assert bound_pixels((480, 854), 3) == 3
    with pytest.raises(ValueError, match="whole"):
        bound_pixels((10, 10), 1.5)


def test_f_tolerance_hand_case() -> None:
    # 4x4 square -> a 16-pixel boundary ring (rows/cols 1..5). Shifted 3 px right with radius 2: 11 of the 16
    # pixels lie within 2 px of the other ring, both ways, so p = r = F = 11/16.
    gt = np.zeros((12, 12), bool)
    gt[2:6, 2:6] = True
    assert seg2bmap(gt).sum() == 16
    shifted = np.roll(gt, 3, axis=1)
    assert boundary_f(gt, shifted, bound_th=2) == pytest.approx(11 / 16, abs=1e-15)
    assert boundary_f(gt, np.roll(gt, 2, axis=1), bound_th=2) == 1.0  # within tolerance everywhere
    assert boundary_f(gt, shifted, bound_th=2) == ref_f(gt, shifted, bound_th=2)


def test_f_empty_cases() -> None:
    empty, full = np.zeros((6, 6), bool), np.ones((6, 6), bool)
    obj = np.zeros((6, 6), bool)
    obj[1:3, 1:3] = True
    assert boundary_f(empty, empty) == 1.0  # no boundary anywhere: p = r = 1
    assert boundary_f(obj, empty) == 0.0  # p = 1, r = 0
    assert boundary_f(empty, obj) == 0.0  # p = 0, r = 1
    assert boundary_f(full, full) == 1.0  # frame-filling masks have no boundary either


@pytest.mark.parametrize("fallback", [False, True])
def test_fast_f_equals_reference_on_random_blobs(fallback: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if fallback:  # the numpy dilation used when OpenCV is not installed
        monkeypatch.setitem(sys.modules, "cv2", None)
    rng = np.random.default_rng(1)
    cases = [((480, 854), 0.0), ((480, 854), 0.3), ((37, 53), 0.2), ((64, 64), -0.3), ((30, 40), 0.6)]
    for shape, thresh in cases[: 3 if fallback else 5]:
        gt, pred = blobs(rng, shape, thresh), blobs(rng, shape, thresh)
        void = blobs(rng, shape, 1.2) if shape[0] < 100 else None
        assert boundary_f(gt, pred, void) == ref_f(gt, pred, void), shape  # identical, not approximately
        near = np.roll(gt, (3, 7), axis=(0, 1))  # mostly within tolerance
        assert boundary_f(gt, near) == ref_f(gt, near), shape
    gts = np.stack([blobs(rng, (50, 70), t) for t in (0.2, 0.5)])
    preds = np.stack([blobs(rng, (50, 70), t) for t in (0.1, 0.4, 0.9)])
    j, f = pairwise_jf(gts, preds)
    assert f.shape == (3, 2)
    for k in range(3):
        for n in range(2):
            assert f[k, n] == ref_f(gts[n], preds[k]) and j[k, n] == region_similarity(gts[n], preds[k])


# ---- statistics ------------------------------------------------------------------------------------------------------
def test_db_statistics_known_sequence() -> None:
    v = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    # 8 frames: bin edges round(linspace(1, 8, 5)) - 1 = [0, 2, 4, 5, 7]; first bin v[0:3], last bin v[5:8]
    mean, recall, decay = db_statistics(v)
    assert mean == pytest.approx(0.55) and recall == 0.5  # 0.5 itself is not > 0.5
    assert decay == pytest.approx(0.8 - 0.3)
    mean, recall, _ = db_statistics(np.array([np.nan, 1.0, 0.0, 1.0]))
    assert mean == pytest.approx(2 / 3) and recall == 0.5  # NaN frames: out of the mean, a miss in recall


def test_summarize_and_annotators() -> None:
    table, rows = summarize({"a_1": (np.array([1.0, 1.0]), np.array([0.5, 0.5])), "a_2": (np.zeros(2), np.ones(2))})
    assert table["J-Mean"] == 0.5 and table["F-Mean"] == 0.75 and table["J&F-Mean"] == 0.625
    assert table["J-Recall"] == 0.5 and table["F-Recall"] == 0.5 and rows == [("a_1", 1.0, 0.5), ("a_2", 0.0, 1.0)]
    avg = average_annotators([{"J&F-Mean": 0.4, "task": "x"}, {"J&F-Mean": 0.6}, {"J&F-Mean": 0.5}, {"J&F-Mean": 0.5}])
    assert avg == {"J&F-Mean": pytest.approx(0.5)}


# ---- protocols -------------------------------------------------------------------------------------------------------
def _two_objects(frames: int = 5) -> np.ndarray:
    labels = np.zeros((frames, 24, 32), np.int64)
    for t in range(frames):
        labels[t, 2:8, 2 + t : 10 + t] = 1
        labels[t, 12:20, 16:26] = 2
    return labels


def test_hungarian_matching_forgives_swapped_ids() -> None:
    gt = _two_objects()
    swapped = np.choose(gt, [0, 2, 1])  # object 1 predicted as id 2 and vice versa
    swapped[:, 0, 0] = 3  # a third, junk proposal
    j, f = evaluate_sequence(gt, swapped, "unsupervised")
    assert j.shape == (2, 5) and (j == 1).all() and (f == 1).all()
    j, f = evaluate_sequence(gt, np.where(swapped == 3, 0, swapped), "semi-supervised")
    assert j.shape == (2, 3) and (j == 0).all()  # matched by id, first and last frames dropped


def test_protocol_details() -> None:
    gt = _two_objects()
    pred = gt.copy()
    pred[[0, -1]] = 0  # first and last frames are not scored in the semi-supervised task
    assert (evaluate_sequence(gt, pred, "semi-supervised")[0] == 1).all()
    assert (evaluate_sequence(gt, pred, "unsupervised")[0][:, [0, -1]] == 0).all()
    with pytest.raises(ValueError, match="object id 3"):
        evaluate_sequence(gt, np.where(gt == 2, 3, gt), "semi-supervised")
    voided = gt.copy()
    voided[:, 20:, :] = 255  # void: ignored in the unsupervised task
    noisy = gt.copy()
    noisy[:, 20:, :] = 1
    j, f = evaluate_sequence(voided, noisy, "unsupervised")
    assert (j == 1).all() and (f == 1).all()
    late = gt.copy()
    late[0][late[0] == 2] = 0  # object 2 missing from the first frame: not an object (official rule)
    assert evaluate_sequence(late, gt, "unsupervised")[0].shape == (1, 5)


# ---- A2D / JHMDB -----------------------------------------------------------------------------------------------------
def _square(size: int, y: int, x: int, side: int) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[y : y + side, x : x + side] = True
    return m


def test_a2d_iou_precision_and_best_prediction() -> None:
    gt = _square(20, 0, 0, 10)  # 100 px
    half = np.zeros((20, 20), bool)
    half[0:10, 0:5] = True  # I = 50, U = 100: IoU 0.5 (+ smoothing, as MTTR: counts for P@0.5)
    lower = np.zeros((20, 20), bool)
    lower[0:7, 0:7] = True  # 49 / 100 = 0.49
    wrong = _square(20, 10, 10, 10)
    r = evaluate_a2d([gt, gt, gt], [np.stack([wrong, half]), lower[None], gt[None]],
                     [np.array([0.1, 0.9]), np.array([1.0]), np.array([0.3])], with_map=False)  # fmt: skip
    assert r["P@0.5"] == pytest.approx(2 / 3) and r["P@0.6"] == pytest.approx(1 / 3) and r["P@0.9"] == 1 / 3
    assert r["oIoU"] == pytest.approx((50 + 49 + 100) / 300) and r["mIoU"] == pytest.approx((0.5 + 0.49 + 1) / 3)


def test_a2d_map_known_answers() -> None:
    a, b = _square(32, 2, 2, 12), _square(32, 16, 10, 10)
    perfect = evaluate_a2d([a, b], [a[None], b[None]], [np.array([0.9]), np.array([0.8])])
    assert perfect["mAP"] == 1.0 and perfect["AP50"] == 1.0 and perfect["mIoU"] == 1.0
    # one hit and one miss: at recall <= 0.5 precision is 1 (hit ranked first) or 0.5 (miss first);
    # 51 of the 101 recall points are <= 0.5
    first = evaluate_a2d([a, b], [a[None], a[None]], [np.array([0.9]), np.array([0.8])])
    last = evaluate_a2d([a, b], [a[None], a[None]], [np.array([0.8]), np.array([0.9])])
    assert first["mAP"] == pytest.approx(51 / 101) and last["mAP"] == pytest.approx(0.5 * 51 / 101)
