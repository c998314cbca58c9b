"""Offline scoring of saved video masks: DAVIS-2017 folders and Ref-YouTube-VOS submissions (metrics in `vos`).

DAVIS layout (ground truth and prediction alike): `<sequence>/<frame>.png` label maps (palette or grey PNG:
the stored index is the object id, 0 background, 255 void in the ground truth). Sequences and frames are the
ground truth's, sorted by name, as the official evaluation lists them; a prediction must exist for every scored
frame (semi-supervised: all but the first and last). The tables are the official CSVs: `global_results-<set>.csv`
(`J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay`) and `per-sequence_results-<set>.csv`
(`Sequence,J-Mean,F-Mean`, one row per object `<sequence>_<i>`), fractions written with "%.3f".

Ref-YouTube-VOS layout: `[Annotations/]<video>/<exp_id>/<frame>.png` binary masks (nonzero = object). Each
expression is one object scored over the ground truth's frames (J and F per frame, statistics per expression,
then the mean over expressions), without void pixels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from vlalign.data.images import DEFAULT_MAX_PIXELS, ImageError, open_decoded
from vlalign.metrics.vos import BOUND_TH, GLOBAL_COLUMNS, evaluate_sequence, pairwise_jf, summarize

_INDEX_MODES = ("P", "L", "1", "I;16", "I;16L", "I;16B", "I")  # modes whose array is one index per pixel


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """HxW int64 label map of a palette / grey PNG (palette *indices*, as np.array(Image.open(p)) gives).

    Raises FileNotFoundError or ImageError naming the file (undecodable, truncated, colour or alpha mode).
    """
    image = open_decoded(path, DEFAULT_MAX_PIXELS, "mask")
    if image.mode not in _INDEX_MODES:
        raise ImageError(f"mask {path} has mode {image.mode!r}; expected a palette (P) or grey (L) label PNG "
                         "where each pixel stores an object id")  # fmt: skip
    return np.asarray(image).astype(np.int64)


def _subdirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir())


def _frames(path: Path) -> list[str]:
    return sorted(p.stem for p in path.glob("*.png"))


def _check_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {path}")
    return path


def _missing_error(missing: list[str], pred_dir: Path) -> FileNotFoundError:
    shown = ", ".join(missing[:20]) + (f", ... ({len(missing)} in all)" if len(missing) > 20 else "")
    return FileNotFoundError(f"{len(missing)} prediction(s) missing under {pred_dir}: {shown}")


def _read_stack(paths: list[Path | None], shape: tuple[int, int] | None) -> np.ndarray:
    """TxHxW labels; None entries (frames the protocol does not score) are zeros."""
    maps = [None if p is None else read_label_png(p) for p in paths]
    shape = shape or next(m.shape for m in maps if m is not None)
    for p, m in zip(paths, maps):
        if m is not None and m.shape != shape:
            raise ValueError(f"mask {p} is {m.shape[1]}x{m.shape[0]}, expected {shape[1]}x{shape[0]} (W x H)")
    return np.stack([np.zeros(shape, np.int64) if m is None else m for m in maps])


def score_davis(gt_dir: str | os.PathLike, pred_dir: str | os.PathLike, task: str = "unsupervised",
                bound_th: float = BOUND_TH) -> tuple[dict[str, Any], list[tuple[str, float, float]]]:  # fmt: skip
    """Score a DAVIS-layout prediction folder against ground truth with the official protocol of `task`.

    Returns (global metrics: the 7 official columns as fractions plus task / counts, per-object rows
    (name, J-Mean, F-Mean)). Every missing prediction is listed in one FileNotFoundError.
    """
    gt_dir, pred_dir = _check_dir(Path(gt_dir), "ground-truth"), _check_dir(Path(pred_dir), "prediction")
    sequences = [s for s in _subdirs(gt_dir) if _frames(gt_dir / s)]
    if not sequences:
        raise FileNotFoundError(f"no <sequence>/<frame>.png ground truth under {gt_dir}")
    frames = {s: _frames(gt_dir / s) for s in sequences}
    scored = {s: f[1:-1] if task == "semi-supervised" else f for s, f in frames.items()}
    missing = [f"{s}/{f}.png" for s in sequences for f in scored[s] if not (pred_dir / s / f"{f}.png").is_file()]
    if missing:
        raise _missing_error(missing, pred_dir)
    objects: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for seq in sequences:
        gt = _read_stack([gt_dir / seq / f"{f}.png" for f in frames[seq]], None)
        keep = set(scored[seq])
        pred = _read_stack([pred_dir / seq / f"{f}.png" if f in keep else None for f in frames[seq]], gt.shape[1:])
        try:
            j, f = evaluate_sequence(gt, pred, task, bound_th)
        except ValueError as err:
            raise ValueError(f"sequence {seq} ({pred_dir / seq}): {err}") from err
        objects.update({f"{seq}_{i + 1}": (j[i], f[i]) for i in range(len(j))})
    table, rows = summarize(objects)
    return {**table, "task": task, "num_sequences": len(sequences), "num_objects": len(rows)}, rows


def write_davis_csvs(out_dir: str | os.PathLike, result: dict[str, Any], rows: list[tuple[str, float, float]],
                     subset: str = "val") -> tuple[Path, Path]:  # fmt: skip
    """Write the official `global_results-<subset>.csv` and `per-sequence_results-<subset>.csv`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    global_path = out_dir / f"global_results-{subset}.csv"
    seq_path = out_dir / f"per-sequence_results-{subset}.csv"
    global_path.write_text(",".join(GLOBAL_COLUMNS) + "\n" + ",".join(f"{result[k]:.3f}" for k in GLOBAL_COLUMNS)
                           + "\n")  # fmt: skip
    lines = ["Sequence,J-Mean,F-Mean"] + [f"{name},{j:.3f},{f:.3f}" for name, j, f in rows]
    seq_path.write_text("\n".join(lines) + "\n")
    return global_path, seq_path


def _annotations(path: Path) -> Path:
    return path / "Annotations" if (path / "Annotations").is_dir() else path


def _read_binary(path: Path) -> np.ndarray:
    return read_label_png(path) != 0


def score_ytvos(gt_dir: str | os.PathLike, pred_dir: str | os.PathLike,
                bound_th: float = BOUND_TH) -> tuple[dict[str, Any], list[tuple[str, float, float]]]:  # fmt: skip
    """Score a Ref-YouTube-VOS submission (`Annotations/<video>/<exp_id>/<frame>.png`) against ground truth in
    the same layout. Returns (global metrics as in `score_davis`, per-expression rows "<video>/<exp_id>")."""
    gt_root = _annotations(_check_dir(Path(gt_dir), "ground-truth"))
    pred_root = _annotations(_check_dir(Path(pred_dir), "prediction"))
    exps = [f"{v}/{e}" for v in _subdirs(gt_root) for e in _subdirs(gt_root / v) if _frames(gt_root / v / e)]
    if not exps:
        raise FileNotFoundError(f"no <video>/<exp_id>/<frame>.png ground truth under {gt_root}")
    frames = {x: _frames(gt_root / x) for x in exps}
    missing = [f"{x}/{f}.png" for x in exps for f in frames[x] if not (pred_root / x / f"{f}.png").is_file()]
    if missing:
        raise _missing_error(missing, pred_root)
    objects: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for x in exps:
        scores = []
        for f in frames[x]:
            gt, pred = _read_binary(gt_root / x / f"{f}.png"), _read_binary(pred_root / x / f"{f}.png")
            if gt.shape != pred.shape:
                raise ValueError(f"mask {pred_root / x / f'{f}.png'} is {pred.shape[1]}x{pred.shape[0]}, "
                                 f"expected {gt.shape[1]}x{gt.shape[0]} (W x H)")  # fmt: skip
            j, fm = pairwise_jf(gt[None], pred[None], bound_th=bound_th)
            scores.append((j[0, 0], fm[0, 0]))
        j_f = np.asarray(scores)  # (T, 2)
        objects[x] = (np.ascontiguousarray(j_f[:, 0]), np.ascontiguousarray(j_f[:, 1]))
    table, rows = summarize(objects)
    return {**table, "num_videos": len({x.split("/")[0] for x in exps}), "num_expressions": len(rows)}, rows
