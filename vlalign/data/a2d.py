"""A2D-Sentences (Gavrilyuk et al., CVPR 2018) in the layout MTTR and ReferFormer read.

    ROOT/Release/videoset.csv      no header; vid,label,start,end,height,width,total_frames,annotated_frames,subset
                                   (subset 0 = train, 1 = test; 3,782 rows)
    ROOT/Release/clips320H/<vid>.mp4
    ROOT/text_annotations/a2d_annotation.txt          CSV with header video_id,instance_id,query (6,655 rows)
    ROOT/text_annotations/a2d_missed_videos.txt       one video id per line: excluded
    ROOT/text_annotations/a2d_annotation_with_instances/<vid>/<frame:05d>.h5
        "instance": the instance ids on that frame; "reMask": their masks, stored by MATLAB as N x W x H
        (W x H for a single instance), so transposed to N x H x W on reading, as MTTR does

Frame names are 1-based (`00001` is the first frame of the video), the h5 files' and the extracted frames'
alike. Frames are read as images from `frames_dir` (default ROOT/Release/pngs320H/<vid>/<frame>.png, the layout
of the LAVT video code); `extract_frames` writes that folder from the mp4 clips once (OpenCV, the `video`
extra). Every row of a2d_annotation.txt is one expression (exp_id = its data-row number, obj_id = its instance
id) over all `total_frames` of its video; the row whose instance id is "1 (copy)" is dropped, as in MTTR.
`target_frames` are the frames whose h5 holds the instance: the per-frame samples of the official protocol
(`ReferringClips(..., mode="frames")`, `image_id`).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from vlalign.data.ytvos import Expression, frame_size

__all__ = ["A2DSentences", "extract_frames", "image_id", "read_h5_masks"]

SUBSETS = {"train": 0, "test": 1}
_VIDEOSET_COLUMNS = 9
_COPY_ROW = "1 (copy)"  # one duplicated instance in video T6bNPuKV-wY, dropped by MTTR and ReferFormer


def image_id(video: str, frame: str, obj_id: int) -> str:
    """MTTR's COCO image id of one (video, annotated frame, instance) sample: v_<vid>_f_<frame index>_i_<id>."""
    return f"v_{video}_f_{int(frame)}_i_{obj_id}"


def _h5py():
    try:
        import h5py
    except ImportError as err:  # only A2D needs it: not a core dependency
        raise ImportError("reading A2D-Sentences masks needs h5py (pip install h5py)") from err
    return h5py


def read_h5_masks(path: str | os.PathLike) -> tuple[list[int], np.ndarray]:
    """(instance ids, bool N x H x W masks) of one A2D annotation h5 file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"A2D annotation file not found: {path}")
    try:
        with _h5py().File(path, "r") as handle:
            for key in ("instance", "reMask"):
                if key not in handle:
                    raise ValueError(f"{path}: missing dataset {key!r} (found {sorted(handle.keys())})")
            ids = [int(v) for v in np.asarray(handle["instance"]).reshape(-1)]
            masks = np.asarray(handle["reMask"])
    except OSError as err:
        raise ValueError(f"{path}: not a readable HDF5 file ({err})") from err
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or masks.shape[0] != len(ids):
        raise ValueError(f"{path}: 'reMask' has shape {masks.shape}, expected {len(ids)} x W x H for the "
                         f"{len(ids)} ids of 'instance'")  # fmt: skip
    return ids, np.ascontiguousarray(masks.transpose(0, 2, 1)) != 0  # MATLAB N x W x H -> N x H x W


def _read_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"A2D-Sentences {what} not found: {path}")
    return path.read_text(encoding="utf-8").splitlines()


class A2DSentences:
    """A2D-Sentences expressions of one subset ("train" or "test"), with frames, h5 masks and targets."""

    image_ext = ".png"
    has_annotations = True

    def __init__(self, root: str | os.PathLike, split: str = "test", frames_dir: str | os.PathLike | None = None):
        if split not in SUBSETS:
            raise ValueError(f"A2DSentences split must be one of {tuple(SUBSETS)}, got {split!r}")
        self.root, self.split = Path(root), split
        self.frames_dir = Path(frames_dir) if frames_dir is not None else self.root / "Release" / "pngs320H"
        self.videoset_path = self.root / "Release" / "videoset.csv"
        text_dir = self.root / "text_annotations"
        self.annotation_dir = text_dir / "a2d_annotation_with_instances"
        self.text_path = text_dir / "a2d_annotation.txt"
        total_frames = self._read_videoset()
        self.missed_videos = {v.strip() for v in _read_lines(text_dir / "a2d_missed_videos.txt", "missed list")
                              if v.strip()}  # fmt: skip
        rows = list(csv.reader(_read_lines(self.text_path, "annotation file")))
        if not rows or [c.strip() for c in rows[0][:3]] != ["video_id", "instance_id", "query"]:
            raise ValueError(f"{self.text_path}: expected the header 'video_id,instance_id,query', got "
                             f"{rows[0] if rows else 'an empty file'}")  # fmt: skip
        self.expressions: list[Expression] = []
        for number, row in enumerate(rows[1:]):
            if not row:
                continue
            where = f"{self.text_path}: line {number + 2}"
            if len(row) < 3:
                raise ValueError(f"{where}: expected video_id,instance_id,query, got {row!r}")
            video, instance, text = row[0].strip(), row[1].strip(), " ".join(",".join(row[2:]).split())
            if video not in total_frames or video in self.missed_videos or instance == _COPY_ROW:
                continue  # other subset, excluded video, or the known duplicate
            if not instance.isdigit():
                raise ValueError(f"{where}: instance_id must be an int, got {instance!r}")
            if not text:
                raise ValueError(f"{where}: empty query")
            frames = [f"{k:05d}" for k in range(1, total_frames[video] + 1)]
            self.expressions.append(Expression(video, str(number), text, int(instance), frames))
        if not self.expressions:
            raise ValueError(f"{self.text_path}: no expression of subset {split!r}")
        self._ids: dict[tuple[str, str], frozenset[int]] = {}

    def _read_videoset(self) -> dict[str, int]:
        """{video: total frames} of the videos of this subset."""
        total: dict[str, int] = {}
        for number, row in enumerate(csv.reader(_read_lines(self.videoset_path, "videoset.csv")), start=1):
            if not row:
                continue
            if len(row) != _VIDEOSET_COLUMNS:
                raise ValueError(f"{self.videoset_path}: line {number}: expected {_VIDEOSET_COLUMNS} columns "
                                 f"(vid,label,start,end,h,w,total_frames,annotated_frames,subset), got "
                                 f"{len(row)}")  # fmt: skip
            try:
                frames, subset = int(row[6]), int(row[8])
            except ValueError as err:
                raise ValueError(f"{self.videoset_path}: line {number}: total_frames and subset must be ints, "
                                 f"got {row[6]!r}, {row[8]!r}") from err  # fmt: skip
            if subset == SUBSETS[self.split]:
                total[row[0].strip()] = frames
        return total

    def frame_path(self, video: str, frame: str) -> Path:
        return self.frames_dir / video / f"{frame}{self.image_ext}"

    def annotation_path(self, video: str, frame: str) -> Path | None:
        path = self.annotation_dir / video / f"{frame}.h5"
        return path if path.is_file() else None

    def load_mask(self, video: str, frame: str, obj_id: int | None) -> np.ndarray:
        """bool HxW mask of instance `obj_id` (all False where the frame has no h5 or not this instance)."""
        path = self.annotation_path(video, frame)
        if path is None or obj_id is None:
            return np.zeros(frame_size(self.frame_path(video, frame)), dtype=bool)
        ids, masks = read_h5_masks(path)
        return masks[ids.index(obj_id)] if obj_id in ids else np.zeros(masks.shape[1:], dtype=bool)

    def ids_in_frame(self, video: str, frame: str) -> frozenset[int]:
        key = (video, frame)
        if key not in self._ids:
            path = self.annotation_path(video, frame)
            self._ids[key] = frozenset(read_h5_masks(path)[0]) if path is not None else frozenset()
        return self._ids[key]

    def target_frames(self, expression: Expression) -> list[str]:
        """Frames whose h5 holds the instance (only the h5 files present are opened)."""
        folder = self.annotation_dir / expression.video
        present = sorted(p.stem for p in folder.glob("*.h5")) if folder.is_dir() else []
        return [f for f in present if expression.obj_id in self.ids_in_frame(expression.video, f)]

    def __len__(self) -> int:
        return len(self.expressions)

    def __repr__(self) -> str:
        return f"A2DSentences({str(self.root)!r}, split={self.split!r}, expressions={len(self.expressions)})"


def extract_frames(root: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                   videos: list[str] | None = None) -> int:  # fmt: skip
    """Decode Release/clips320H/<vid>.mp4 into <out_dir>/<vid>/<k:05d>.png (k from 1); returns frames written.

    out_dir defaults to ROOT/Release/pngs320H, the default `frames_dir` of `A2DSentences`. Videos whose folder
    exists already are skipped.
    """
    try:
        import cv2
    except ImportError as err:
        raise ImportError("extracting A2D frames needs OpenCV (pip install 'vlalign[video]')") from err
    root = Path(root)
    clips = root / "Release" / "clips320H"
    out = Path(out_dir) if out_dir is not None else root / "Release" / "pngs320H"
    names = videos if videos is not None else sorted(p.stem for p in clips.glob("*.mp4"))
    written = 0
    for video in names:
        target = out / video
        if target.is_dir():
            continue
        capture = cv2.VideoCapture(str(clips / f"{video}.mp4"))
        if not capture.isOpened():
            raise FileNotFoundError(f"cannot open the A2D clip {clips / f'{video}.mp4'}")
        partial = out / f".{video}.partial"  # renamed when complete, so an interrupted run is redone
        partial.mkdir(parents=True, exist_ok=True)
        count = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            count += 1
            cv2.imwrite(str(partial / f"{count:05d}.png"), frame)
        capture.release()
        partial.rename(target)
        written += count
    return written
