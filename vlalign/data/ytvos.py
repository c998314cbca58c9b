"""Ref-YouTube-VOS (URVOS, Seo et al. ECCV 2020) read in its released layout, plus the pieces every video reader
shares (`Expression`, palette label masks, frame sizes).

Layout:

    ROOT/meta_expressions/<split>/meta_expressions.json
        {"videos": {vid: {"expressions": {exp_id: {"exp": str, "obj_id": str}}, "frames": [frame, ...]}}}
        (valid / test: no "obj_id" in the released files)
    ROOT/<split>/meta.json              train: {"videos": {vid: {"objects": {obj_id: {"category", "frames"}}}}}
    ROOT/<split>/JPEGImages/<vid>/<frame>.jpg
    ROOT/<split>/Annotations/<vid>/<frame>.png   palette PNG, palette index = obj_id (0 background)

Splits: "train"; "valid" = the videos of meta_expressions/valid minus those listed in
meta_expressions/test/meta_expressions.json when that file exists (the released valid json holds all 507 videos,
202 of them form the competition's valid set); "test" = the test json's videos, whose frames are read from
ROOT/test/JPEGImages, or from ROOT/valid/JPEGImages where the test videos were released among the valid ones.

Every reader in `vlalign.data` (Ref-DAVIS17, A2D-Sentences, JHMDB-Sentences) gives the same `Expression` records
and the methods `frame_path`, `annotation_path`, `load_mask`, `target_frames`, so that `ReferringClips`
(`vlalign.data.clips`) and the video inference run on any of them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vlalign.data.images import DEFAULT_MAX_PIXELS, ImageError, open_decoded

__all__ = ["SPLITS", "Expression", "RefYTVOS", "frame_size", "read_json", "read_palette_png"]

SPLITS = ("train", "valid", "test")
# Modes whose pixel value is the object id. "L" (grey label maps, written by some conversion scripts) means the
# same as a palette index; colour and alpha PNGs do not store ids at all and are refused.
_LABEL_MODES = ("P", "L")


@dataclass(frozen=True)
class Expression:
    """One referring expression of one video.

    obj_id: the object's id in the annotations (palette index, A2D instance id, ...); None where the split
    releases no target (Ref-YouTube-VOS valid / test). frames: every frame name of the video, in order.
    """

    video: str
    exp_id: str
    text: str
    obj_id: int | None
    frames: list[str]


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parsed JSON of `path`; FileNotFoundError / ValueError naming the file and what it should be."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: {what} is not valid JSON: {err}") from err


def read_palette_png(path: str | os.PathLike) -> np.ndarray:
    """HxW int64 map of palette indices (= object ids) of a palette (or grey) PNG; ImageError for other modes."""
    image = open_decoded(path, DEFAULT_MAX_PIXELS, "mask")
    if image.mode not in _LABEL_MODES:
        raise ImageError(
            f"mask {path} has mode {image.mode!r}; expected a palette (P) PNG whose index is the object id "
            "(a colour PNG stores colours, not ids)"
        )
    return np.asarray(image).astype(np.int64)


def frame_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of an image from its header only (no decoding); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"frame not found: {path}")
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"frame {path} cannot be read: {err}") from err
    return height, width


def _obj_id(value: Any, where: str) -> int:
    """Object ids are strings in the json ("1"); palette index 0 is the background, so ids start at 1."""
    try:
        obj_id = int(value)
    except (TypeError, ValueError):
        obj_id = -1
    if isinstance(value, bool) or obj_id < 1 or obj_id > 255:
        raise ValueError(f"{where}: field 'obj_id' must be an object id 1..255 (a palette index), got {value!r}")
    return obj_id


def _dict_field(entry: Any, key: str, where: str) -> dict:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    value = entry.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"{where}: field {key!r} must be a JSON object, got {value!r:.60}")
    return value


def _frame_list(entry: dict, where: str) -> list[str]:
    frames = entry.get("frames")
    if not isinstance(frames, list) or not frames or not all(isinstance(f, str) and f for f in frames):
        raise ValueError(f"{where}: field 'frames' must be a non-empty list of frame names, got {frames!r:.60}")
    if len(set(frames)) != len(frames):
        raise ValueError(f"{where}: field 'frames' lists a frame twice")
    return frames


def parse_meta_expressions(path: Path, keep=None) -> list[Expression]:
    """Expressions of a meta_expressions.json, in file order; `keep(video) -> bool` selects videos."""
    content = read_json(path, "meta_expressions.json")
    videos = _dict_field(content, "videos", str(path))
    expressions = []
    for video, entry in videos.items():
        if keep is not None and not keep(video):
            continue
        where = f"{path}: videos[{video!r}]"
        exps = _dict_field(entry, "expressions", where)
        if not exps:
            raise ValueError(f"{where}: field 'expressions' is empty (every video needs one expression or more)")
        frames = _frame_list(entry, where)
        for exp_id, exp in exps.items():
            at = f"{where}: expressions[{exp_id!r}]"
            text = exp.get("exp") if isinstance(exp, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{at}: field 'exp' must be a non-empty sentence, got {text!r:.60}")
            obj_id = _obj_id(exp["obj_id"], at) if exp.get("obj_id") is not None else None
            # whitespace normalised (the released text has doubled and trailing spaces); case is the tokenizer's
            expressions.append(Expression(video, str(exp_id), " ".join(text.split()), obj_id, list(frames)))
    return expressions


class LabelMapReader:
    """Shared by readers whose annotations are one palette PNG per frame (Ref-YouTube-VOS, Ref-DAVIS17).

    Subclasses set `expressions`, `image_dir`, `annotation_dir` and may fill `_object_frames[(video, obj_id)]`
    from a meta file; otherwise the frames that contain an object are found by reading the PNGs (cached ids).
    """

    image_dir: Path
    annotation_dir: Path | None
    image_ext = ".jpg"
    expressions: list[Expression]

    def __init__(self) -> None:
        self._object_frames: dict[tuple[str, int], list[str]] = {}
        self._ids_cache: dict[tuple[str, str], frozenset[int]] = {}
        self._targets_cache: dict[tuple[str, int], list[str]] = {}

    @property
    def has_annotations(self) -> bool:
        return self.annotation_dir is not None and self.annotation_dir.is_dir()

    def frame_path(self, video: str, frame: str) -> Path:
        return self.image_dir / video / f"{frame}{self.image_ext}"

    def annotation_path(self, video: str, frame: str) -> Path | None:
        """The frame's label PNG, or None where the frame is not annotated."""
        if not self.has_annotations:
            return None
        path = self.annotation_dir / video / f"{frame}.png"
        return path if path.is_file() else None

    def label_map(self, video: str, frame: str) -> np.ndarray | None:
        """HxW int64 object ids of an annotated frame, checked against the frame's size; None if not annotated."""
        path = self.annotation_path(video, frame)
        if path is None:
            return None
        labels = read_palette_png(path)
        expected = frame_size(self.frame_path(video, frame))
        if labels.shape != expected:
            raise ValueError(
                f"mask {path} is {labels.shape[1]}x{labels.shape[0]} (W x H) but its frame "
                f"{self.frame_path(video, frame)} is {expected[1]}x{expected[0]}"
            )
        return labels

    def load_mask(self, video: str, frame: str, obj_id: int | None) -> np.ndarray:
        """bool HxW mask of `obj_id` on `frame`; all False if the frame is not annotated or the object absent."""
        labels = self.label_map(video, frame) if obj_id is not None else None
        if labels is None:
            return np.zeros(frame_size(self.frame_path(video, frame)), dtype=bool)
        return labels == obj_id

    def ids_in_frame(self, video: str, frame: str) -> frozenset[int]:
        """Object ids present on an annotated frame (empty if not annotated); cached."""
        key = (video, frame)
        if key not in self._ids_cache:
            path = self.annotation_path(video, frame)
            ids = np.unique(read_palette_png(path)) if path is not None else []
            self._ids_cache[key] = frozenset(int(i) for i in ids if i != 0)
        return self._ids_cache[key]

    def target_frames(self, expression: Expression) -> list[str]:
        """Annotated frames of the expression on which its object is present, in frame order (cached)."""
        if expression.obj_id is None or not self.has_annotations:
            return []
        key = (expression.video, expression.obj_id)
        if key not in self._targets_cache:
            listed = self._object_frames.get(key)
            if listed is not None:  # a meta file names them: only check that each has its PNG
                listed_set = set(listed)
                found = [f for f in expression.frames if f in listed_set and self.annotation_path(expression.video, f)]
            else:
                found = [f for f in expression.frames if expression.obj_id in self.ids_in_frame(expression.video, f)]
            self._targets_cache[key] = found
        return list(self._targets_cache[key])


class RefYTVOS(LabelMapReader):
    """Ref-YouTube-VOS of one split: `.expressions` (list of `Expression`), frame and annotation paths, masks.

    Checked at construction: the json files (fields and types, errors name the file and the field), that every
    video has a JPEGImages folder, and (with train's meta.json) that every expression's obj_id is one of its
    video's objects. Frames and masks are checked when read (missing file, undecodable, not palette, size).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"RefYTVOS split must be one of {SPLITS}, got {split!r}")
        self.root, self.split = Path(root), split
        self.meta_path = self.root / "meta_expressions" / split / "meta_expressions.json"
        test_json = self.root / "meta_expressions" / "test" / "meta_expressions.json"
        keep = None
        self.excluded_test_videos: list[str] = []
        if split == "valid" and test_json.is_file():
            test_videos = set(_dict_field(read_json(test_json, "meta_expressions.json"), "videos", str(test_json)))
            all_videos = _dict_field(read_json(self.meta_path, "meta_expressions.json"), "videos", str(self.meta_path))
            self.excluded_test_videos = [v for v in all_videos if v in test_videos]
            keep = lambda video: video not in test_videos
        self.expressions = parse_meta_expressions(self.meta_path, keep)
        if not self.expressions:
            raise ValueError(f"{self.meta_path}: no videos left in split {split!r}")

        split_dir = self.root / split
        if split == "test" and not (split_dir / "JPEGImages").is_dir():
            split_dir = self.root / "valid"  # the test videos are part of the 507 released valid videos
        self.image_dir = split_dir / "JPEGImages"
        self.annotation_dir = self.root / split / "Annotations"
        self.videos = list(dict.fromkeys(e.video for e in self.expressions))
        for video in self.videos:
            if not (self.image_dir / video).is_dir():
                raise FileNotFoundError(f"frames folder of video {video!r} ({self.meta_path}) not found: "
                                        f"{self.image_dir / video}")  # fmt: skip
        self.meta_json = self.root / split / "meta.json"
        self.categories: dict[tuple[str, int], str] = {}
        if self.meta_json.is_file():
            self._read_meta()

    def _read_meta(self) -> None:
        """meta.json: the object ids of each video, their categories and the frames each object appears on."""
        videos = _dict_field(read_json(self.meta_json, "meta.json"), "videos", str(self.meta_json))
        objects: dict[str, list[int]] = {}
        for video in self.videos:
            if video not in videos:
                raise ValueError(f"{self.meta_json}: video {video!r} of {self.meta_path} is missing")
            where = f"{self.meta_json}: videos[{video!r}]"
            objects[video] = []
            for key, obj in _dict_field(videos[video], "objects", where).items():
                obj_id = _obj_id(key, f"{where}: objects")
                at = f"{where}: objects[{key!r}]"
                if not isinstance(obj, dict):
                    raise ValueError(f"{at}: expected a JSON object, got {type(obj).__name__}")
                objects[video].append(obj_id)
                if "frames" in obj:
                    self._object_frames[(video, obj_id)] = _frame_list(obj, at)
                if isinstance(obj.get("category"), str):
                    self.categories[(video, obj_id)] = obj["category"]
        for exp in self.expressions:
            if exp.obj_id is not None and exp.obj_id not in objects[exp.video]:
                raise ValueError(
                    f"{self.meta_path}: videos[{exp.video!r}]: expressions[{exp.exp_id!r}] refers to obj_id "
                    f"{exp.obj_id}, which is not an object of the video in {self.meta_json} "
                    f"(objects: {sorted(objects[exp.video])})"
                )

    def __len__(self) -> int:
        return len(self.expressions)

    def __repr__(self) -> str:
        return (f"RefYTVOS({str(self.root)!r}, split={self.split!r}, videos={len(self.videos)}, "
                f"expressions={len(self.expressions)}, annotations={self.has_annotations})")  # fmt: skip
