"""RefSegEvaluator against hand-computed intersections, unions and IoUs, single-process and distributed."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vlalign.metrics import RefSegEvaluator
from vlalign.metrics.dist import merge_records

# Three 2x4 expressions, ids 10, 11, 12.
#   10: gt 4 px (left 2x2), pred 3 px (top row, cols 0-2): I = 2, U = 4 + 3 - 2 = 5, IoU = 0.4
#   11: gt 4 px (top row), pred 2 px (top row, cols 0-1):  I = 2, U = 4,             IoU = 0.5
#   12: gt 5 px (top row + (1, 0)), pred 4 px (top row):   I = 4, U = 5,             IoU = 0.8
# mIoU = (0.4 + 0.5 + 0.8) / 3 = 1.7 / 3;  oIoU = (2 + 2 + 4) / (5 + 4 + 5) = 8 / 14
# prec@0.5 = 2/3 (0.5 itself counts), prec@0.6 = prec@0.7 = 1/3, prec@0.8 = 1/3 (0.8 counts), prec@0.9 = 0
IDS = [10, 11, 12]
GTS = np.array(
    [
        [[1, 1, 0, 0], [1, 1, 0, 0]],
        [[1, 1, 1, 1], [0, 0, 0, 0]],
        [[1, 1, 1, 1], [1, 0, 0, 0]],
    ],
    dtype=np.uint8,
)
PREDS = np.array(
    [
        [[1, 1, 1, 0], [0, 0, 0, 0]],
        [[1, 1, 0, 0], [0, 0, 0, 0]],
        [[1, 1, 1, 1], [0, 0, 0, 0]],
    ],
    dtype=np.uint8,
)
EXPECTED = {
    "mIoU": pytest.approx(1.7 / 3),
    "oIoU": pytest.approx(8 / 14),
    "prec@0.5": pytest.approx(2 / 3),
    "prec@0.6": pytest.approx(1 / 3),
    "prec@0.7": pytest.approx(1 / 3),
    "prec@0.8": pytest.approx(1 / 3),
    "prec@0.9": 0.0,
    "num_samples": 3,
    "resolution": "original",
}


def test_hand_computed_batch_and_per_sample() -> None:
    ev = RefSegEvaluator()
    ev.process(torch.from_numpy(PREDS).bool(), torch.from_numpy(GTS), IDS)  # BxHxW tensors, bool vs {0, 1}
    assert ev.evaluate() == EXPECTED
    assert ev.per_sample() == {10: (2, 5, 0.4), 11: (2, 4, 0.5), 12: (4, 5, 0.8)}


def test_list_input_with_mixed_sizes_matches() -> None:
    ev = RefSegEvaluator(resolution="input 480x480")
    # a list of HxW numpy masks, in two calls, plus a 3x3 sample of another size: the diagonal vs the
    # anti-diagonal share only the centre pixel, I = 1, U = 3 + 3 - 1 = 5, IoU = 0.2
    ev.process(list(PREDS[:2]), list(GTS[:2]), IDS[:2])
    ev.process([PREDS[2].astype(bool), np.eye(3, dtype=bool)], [GTS[2], np.eye(3)[::-1] == 1], [12, 13])
    out = ev.evaluate()
    assert out["resolution"] == "input 480x480"
    assert out["num_samples"] == 4
    assert out["mIoU"] == pytest.approx((1.7 + 0.2) / 4)
    assert out["oIoU"] == pytest.approx((8 + 1) / (14 + 5))


@pytest.mark.parametrize(
    ("inter", "union", "threshold"), [(1, 2, 0.5), (3, 5, 0.6), (7, 10, 0.7), (9, 10, 0.9)]
)
def test_iou_exactly_at_threshold_is_a_hit(inter: int, union: int, threshold: float) -> None:
    gt = torch.ones(1, union, dtype=torch.bool)
    pred = torch.arange(union)[None] < inter  # first `inter` pixels of the gt
    ev = RefSegEvaluator()
    ev.process([pred], [gt], ["a"])
    out = ev.evaluate()
    assert out[f"prec@{threshold:g}"] == 1.0
    assert out["mIoU"] == inter / union


def test_empty_union_counts_as_one() -> None:
    ev = RefSegEvaluator()
    empty = np.zeros((2, 4), dtype=bool)
    ev.process([PREDS[1], empty, empty], [GTS[1], empty, GTS[0]], ["half", "both-empty", "missed"])
    # half: I = 2, U = 4; both-empty: I = U = 0 -> IoU 1 by definition; missed: I = 0, U = 4 -> IoU 0
    assert ev.per_sample() == {"half": (2, 4, 0.5), "both-empty": (0, 0, 1.0), "missed": (0, 4, 0.0)}
    out = ev.evaluate()
    assert out["mIoU"] == pytest.approx(1.5 / 3)
    assert out["oIoU"] == pytest.approx(2 / 8)  # the empty sample adds 0 / 0
    assert out["prec@0.5"] == pytest.approx(2 / 3)

    ev.reset()
    ev.process(np.zeros((2, 3, 3), bool), np.zeros((2, 3, 3), bool), [1, 2])
    assert ev.evaluate()["oIoU"] == 1.0  # every union empty


def test_no_samples_and_reset() -> None:
    ev = RefSegEvaluator()
    with pytest.raises(ValueError, match="no samples"):
        ev.evaluate()
    ev.process(PREDS, GTS, IDS)
    ev.reset()
    with pytest.raises(ValueError, match="no samples"):
        ev.evaluate()


def test_shape_mismatch_names_shapes_and_id() -> None:
    ev = RefSegEvaluator()
    with pytest.raises(ValueError, match=r"\(2, 4\) and ground-truth shape \(4, 2\) for id\(s\) 'sent-7'"):
        ev.process([PREDS[0]], [GTS[0].T], ["sent-7"])
    with pytest.raises(
        ValueError, match=r"\(3, 2, 4\) and ground-truth shape \(3, 2, 3\) for id\(s\) 10, 11, 12"
    ):
        ev.process(PREDS, GTS[:, :, :3], IDS)
    with pytest.raises(
        ValueError, match=r"shape \(1, 2, 4\) and ground-truth shape \(1, 2, 4\) for id\(s\) 5"
    ):
        ev.process([PREDS[:1]], [GTS[:1]], [5])  # a list item must be HxW
    with pytest.raises(ValueError, match="3 predictions, 3 ground truths and 2 ids"):
        ev.process(PREDS, GTS, IDS[:2])


def test_non_binary_values_are_refused() -> None:
    ev = RefSegEvaluator()
    logits = torch.tensor(PREDS, dtype=torch.float32) * 3.0 - 1.0
    with pytest.raises(ValueError, match="prediction for id 10 has values outside"):
        ev.process(logits, GTS, IDS)
    with pytest.raises(ValueError, match="ground truth for id 12 has values outside"):
        ev.process(PREDS, GTS * np.array([1, 1, 255], dtype=np.uint8)[:, None, None], IDS)


def test_duplicates_identical_dropped_conflicting_warned() -> None:
    ev = RefSegEvaluator()
    ev.process(PREDS, GTS, IDS)
    ev.process(PREDS[:1], GTS[:1], [10])  # sampler padding: same id, same record
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ev.evaluate() == EXPECTED
    ev.process(PREDS[1:2], GTS[1:2], [10])  # same id, other masks: ids are not unique per sample
    with pytest.warns(UserWarning, match="1 ids were scored twice"):
        assert ev.evaluate() == EXPECTED  # the first record is kept


def test_merge_records_keeps_first() -> None:
    merged = merge_records([[("a", 1), ("b", 2)], [("b", 2), ("c", 3)]])
    assert merged == {"a": 1, "b": 2, "c": 3}
    assert list(merged) == ["a", "b", "c"]


def _dist_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    ev = RefSegEvaluator()
    if rank == 0:
        ev.process(torch.from_numpy(PREDS[:2]), torch.from_numpy(GTS[:2]), IDS[:2])
    else:  # id 10 again: DistributedSampler pads by repeating the first samples
        ev.process([PREDS[2], PREDS[0]], [GTS[2], GTS[0]], [12, 10])
    result = (ev.evaluate(), ev.per_sample())
    with open(f"{out_dir}/rank{rank}.pkl", "wb") as f:
        pickle.dump(result, f)
    dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_equals_single_process(tmp_path) -> None:
    mp.spawn(_dist_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    single = RefSegEvaluator()
    single.process(PREDS, GTS, IDS)
    for rank in (0, 1):
        with open(tmp_path / f"rank{rank}.pkl", "rb") as f:
            result, per_sample = pickle.load(f)
        assert result == single.evaluate()  # exactly, not approximately
        assert per_sample == single.per_sample()


def test_form_breakdown_by_hand():
    from vlalign.refseg import form_breakdown

    per_sample = {1: (5, 10, 0.5), 2: (0, 4, 0.0), 3: (9, 9, 1.0), 4: (1, 1, 1.0)}
    info = {"1": {"form": "relation"}, "2": {"form": "relation"}, "3": {"form": "attributes"}}  # 4 unknown
    got = form_breakdown(per_sample, info)
    assert list(got) == ["form:attributes", "form:relation"]
    assert got["form:relation"] == {"mIoU": 0.25, "oIoU": 5 / 14, "count": 2}
    assert got["form:attributes"] == {"mIoU": 1.0, "oIoU": 1.0, "count": 1}


def test_malformed_synth_info_is_named(tmp_path):
    from vlalign.refseg import form_breakdown
    from vlalign.synth import load_synth_info

    assert load_synth_info(tmp_path) is None  # real data: no file, no breakdown
    (tmp_path / "synth_info.json").write_text('{"1": {"form": "rel')  # truncated
    with pytest.raises(ValueError, match=r"synth_info\.json: not valid JSON"):
        load_synth_info(tmp_path)
    (tmp_path / "synth_info.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        load_synth_info(tmp_path)
    with pytest.raises(ValueError, match="entry 7: expected an object with a 'form'"):
        form_breakdown({7: (1, 2, 0.5)}, {"7": {"kind": "motion"}})
