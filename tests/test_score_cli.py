"""`vlalign score refseg` end to end on a refer-format fixture, through `vlalign.cli.main`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from refer_fixtures import write_refer_dataset

from vlalign.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    # 12 images: val holds images 1, 5 and 9, i.e. 9 refs with 2 or 3 sentences each (> 20 sentences)
    return write_refer_dataset(tmp_path_factory.mktemp("refcoco"), split_by="unc", num_images=12)


def _val(data: dict) -> list[tuple[int, np.ndarray]]:
    return [(s, data["sent_masks"][s]) for s in data["splits"]["val"]["sent_ids"]]


def _save_binary(mask: np.ndarray, path: Path) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)


def _score(data: dict, pred: Path, out: Path) -> int:
    return main(["score", "refseg", "--data", str(data["data_dir"]), "--split", "val", "--pred", str(pred),
                 "--json", str(out)])  # fmt: skip


def test_perfect_predictions(data: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pred = tmp_path / "pred"
    pred.mkdir()
    for sent_id, gt in _val(data):
        _save_binary(gt, pred / f"{sent_id}.png")
    _save_binary(np.ones((4, 4)), pred / "1.png")  # not a val sentence: extra, ignored
    (pred / "notes.txt").write_text("not a prediction")
    out = tmp_path / "results" / "val.json"  # the folder does not exist yet

    assert _score(data, pred, out) == 0
    result = json.loads(out.read_text())
    assert result == {
        "mIoU": 1.0,
        "oIoU": 1.0,
        **{f"prec@{t}": 1.0 for t in ("0.5", "0.6", "0.7", "0.8", "0.9")},
        "num_samples": len(_val(data)),
        "resolution": "original",
        "split": "val",
        "split_by": "unc",
        "num_extra_predictions": 1,
    }
    assert [p.name for p in out.parent.iterdir()] == ["val.json"]  # no temporary file left behind
    table = capsys.readouterr().out
    assert "oIoU" in table and "100.00" in table and f"num_samples={len(_val(data))}" in table


def test_degraded_predictions_known_values(data: dict, tmp_path: Path) -> None:
    """Sentence k gets, by k mod 4: 0 the exact mask (IoU 1, palette PNG), 1 nothing (IoU 0, mode-1 PNG),
    2 and 3 the mask plus as many background pixels as it has foreground ones (I = |G|, U = 2|G|, IoU 0.5,
    RGB PNG)."""
    pred = tmp_path / "pred"
    pred.mkdir()
    sum_i = sum_u = 0
    ious = []
    for k, (sent_id, gt) in enumerate(_val(data)):
        g = int(gt.sum())
        path = pred / f"{sent_id}.png"
        if k % 4 == 0:
            img = Image.fromarray(gt.astype(np.uint8), mode="P")  # palette index 1 = foreground
            img.putpalette([0, 0, 0, 255, 255, 255])
            img.save(path)
            sum_i, sum_u, iou = sum_i + g, sum_u + g, 1.0
        elif k % 4 == 1:
            Image.fromarray(np.zeros_like(gt, dtype=bool)).save(path)  # mode "1"
            sum_u, iou = sum_u + g, 0.0
        else:
            extra = np.flatnonzero(gt.reshape(-1) == 0)[:g]  # the first g background pixels
            assert len(extra) == g
            mask = gt.reshape(-1).copy()
            mask[extra] = 1
            rgb = np.zeros((*gt.shape, 3), np.uint8)
            rgb[..., 2] = mask.reshape(gt.shape) * 7  # any nonzero channel is foreground
            Image.fromarray(rgb, mode="RGB").save(path)
            sum_i, sum_u, iou = sum_i + g, sum_u + 2 * g, 0.5
        ious.append(iou)
    out = tmp_path / "degraded.json"

    assert _score(data, pred, out) == 0
    result = json.loads(out.read_text())
    n = len(ious)
    assert result["num_samples"] == n
    assert result["mIoU"] == pytest.approx(sum(ious) / n)
    assert result["oIoU"] == pytest.approx(sum_i / sum_u)
    assert result["mIoU"] != pytest.approx(result["oIoU"])  # the two averages differ here
    assert result["prec@0.5"] == pytest.approx(sum(v >= 0.5 for v in ious) / n)  # IoU 0.5 counts
    for t in ("0.6", "0.7", "0.8", "0.9"):
        assert result[f"prec@{t}"] == pytest.approx(sum(v == 1.0 for v in ious) / n)
    assert result["num_extra_predictions"] == 0


def test_missing_predictions_listed(data: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pred = tmp_path / "pred"
    pred.mkdir()
    val = _val(data)
    missing = [val[1][0], val[4][0], val[-1][0]]
    for sent_id, gt in val:
        if sent_id not in missing:
            _save_binary(gt, pred / f"{sent_id}.png")
    out = tmp_path / "out.json"

    assert _score(data, pred, out) == 2
    err = capsys.readouterr().err
    assert err.startswith("vlalign score: error: ")
    assert f"3 of {len(val)} predictions missing in {pred}" in err
    assert ", ".join(map(str, missing)) in err
    assert not out.exists()


def test_many_missing_truncated(data: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pred = tmp_path / "empty"
    pred.mkdir()
    val_ids = [s for s, _ in _val(data)]
    assert len(val_ids) > 20

    assert _score(data, pred, tmp_path / "out.json") == 2
    err = capsys.readouterr().err
    assert ", ".join(map(str, val_ids[:20])) + f" ... and {len(val_ids) - 20} more" in err


def test_wrong_size_names_file_and_sizes(data: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pred = tmp_path / "pred"
    pred.mkdir()
    val = _val(data)
    for sent_id, gt in val:
        _save_binary(gt, pred / f"{sent_id}.png")
    sent_id, gt = val[2]
    h, w = gt.shape
    _save_binary(np.ones((h, w + 1)), pred / f"{sent_id}.png")

    assert _score(data, pred, tmp_path / "out.json") == 2
    err = capsys.readouterr().err
    assert f"prediction {pred / f'{sent_id}.png'} is {w + 1}x{h} (WxH), expected {w}x{h}" in err


def test_unreadable_png_names_file(data: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pred = tmp_path / "pred"
    pred.mkdir()
    val = _val(data)
    for sent_id, gt in val:
        _save_binary(gt, pred / f"{sent_id}.png")
    bad = pred / f"{val[0][0]}.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")

    assert _score(data, pred, tmp_path / "out.json") == 2
    err = capsys.readouterr().err
    assert err.startswith("vlalign score: error: ") and str(bad) in err


def test_missing_prediction_dir(data: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _score(data, tmp_path / "nowhere", tmp_path / "out.json") == 2
    assert "prediction directory not found" in capsys.readouterr().err
