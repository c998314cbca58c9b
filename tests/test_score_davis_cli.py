"""`vlalign score davis` and `vlalign score ytvos` end to end on tiny folders written with PIL palette PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlalign.cli import main

PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0, 0, 0] * 252


def _save_labels(labels: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(PALETTE)
    image.save(path)


def _sequence(frames: int, shift: int) -> np.ndarray:
    labels = np.zeros((frames, 24, 40), np.uint8)
    for t in range(frames):
        labels[t, 3:10, 2 + shift + t : 12 + shift + t] = 1
        labels[t, 14:22, 20:30] = 2
    return labels


def _write_davis(root: Path, sequences: dict[str, np.ndarray]) -> Path:
    for name, labels in sequences.items():
        for t, frame in enumerate(labels):
            _save_labels(frame, root / name / f"{t:05d}.png")
    return root


@pytest.fixture()
def davis(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    seqs = {"cat": _sequence(5, 0), "dog": _sequence(6, 3)}
    return _write_davis(tmp_path / "gt", seqs), seqs


def _score(*args: str) -> int:
    return main(["score", *args])


def test_davis_unsupervised_tables(davis, tmp_path: Path) -> None:
    gt_dir, seqs = davis
    pred = {"cat": np.choose(seqs["cat"], [0, 2, 1]).astype(np.uint8), "dog": seqs["dog"]}  # ids swapped in cat
    pred_dir = _write_davis(tmp_path / "pred", pred)
    out = tmp_path / "out" / "davis.json"
    assert _score("davis", "--gt", str(gt_dir), "--pred", str(pred_dir), "--json", str(out)) == 0
    result = json.loads(out.read_text())
    assert result["J&F-Mean"] == 1.0 and result["J-Recall"] == 1.0 and result["F-Decay"] == 0.0
    assert result["task"] == "unsupervised" and result["num_objects"] == 4
    assert (out.parent / "global_results-val.csv").read_text() == (
        "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay\n1.000,1.000,1.000,0.000,1.000,1.000,0.000\n"
    )
    rows = (out.parent / "per-sequence_results-val.csv").read_text().splitlines()
    assert rows == ["Sequence,J-Mean,F-Mean", "cat_1,1.000,1.000", "cat_2,1.000,1.000", "dog_1,1.000,1.000",
                    "dog_2,1.000,1.000"]  # fmt: skip


def test_davis_semi_supervised_ids_and_csv_dir(davis, tmp_path: Path) -> None:
    gt_dir, seqs = davis
    pred = {"cat": np.choose(seqs["cat"], [0, 2, 1]).astype(np.uint8), "dog": seqs["dog"]}
    pred_dir = _write_davis(tmp_path / "pred", pred)
    for name in pred:  # first and last frames are not needed in the semi-supervised task
        (pred_dir / name / "00000.png").unlink()
    out, csv_dir = tmp_path / "semi.json", tmp_path / "tables"
    args = ["davis", "--gt", str(gt_dir), "--pred", str(pred_dir), "--json", str(out), "--task", "semi-supervised"]
    assert _score(*args, "--csv-dir", str(csv_dir)) == 0
    result = json.loads(out.read_text())
    assert result["J-Mean"] == 0.5 and result["J-Recall"] == 0.5  # cat's two objects are swapped: J = 0
    assert (csv_dir / "per-sequence_results-val.csv").read_text().splitlines()[1] == "cat_1,0.000,0.000"


def test_davis_missing_and_malformed(davis, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gt_dir, seqs = davis
    pred_dir = _write_davis(tmp_path / "pred", seqs)
    (pred_dir / "dog" / "00002.png").unlink()
    (pred_dir / "cat" / "00004.png").unlink()
    args = ["davis", "--gt", str(gt_dir), "--pred", str(pred_dir), "--json", str(tmp_path / "x.json")]
    assert _score(*args) == 2
    err = capsys.readouterr().err
    assert "2 prediction(s) missing" in err and "cat/00004.png" in err and "dog/00002.png" in err
    _write_davis(pred_dir, seqs)
    (pred_dir / "cat" / "00003.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert _score(*args) == 2
    assert "cat/00003.png" in capsys.readouterr().err
    Image.new("RGB", (40, 24)).save(pred_dir / "cat" / "00003.png")
    assert _score(*args) == 2
    assert "mode 'RGB'" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_ytvos(tmp_path: Path) -> None:
    gt, pred = tmp_path / "gt" / "Annotations", tmp_path / "sub" / "Annotations"
    mask = np.zeros((20, 30), np.uint8)
    mask[4:12, 5:20] = 255
    for exp, pred_mask in (("0", mask), ("1", np.zeros_like(mask))):  # expression 1 predicted empty: J = F = 0
        for folder, m in ((gt, mask), (pred, pred_mask)):
            (folder / "vid1" / exp).mkdir(parents=True, exist_ok=True)
            for t in range(3):
                Image.fromarray(m, mode="L").save(folder / "vid1" / exp / f"{t:05d}.png")
    out = tmp_path / "ytvos.json"
    assert _score("ytvos", "--gt", str(gt.parent), "--pred", str(pred.parent), "--json", str(out)) == 0
    result = json.loads(out.read_text())
    assert result["J-Mean"] == 0.5 and result["F-Mean"] == 0.5 and result["num_expressions"] == 2
