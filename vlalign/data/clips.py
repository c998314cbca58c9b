"""Clips of T frames for referring video segmentation, from any video reader of `vlalign.data`.

A reader gives `.expressions` (`vlalign.data.ytvos.Expression`), `.has_annotations`, `.frame_path(video, frame)`,
`.annotation_path(video, frame) -> Path | None`, `.load_mask(video, frame, obj_id) -> bool HxW` and
`.target_frames(expression) -> list[str]` (annotated frames showing the object); optionally
`.eval_frames(expression)`, the frames a per-frame protocol scores (A2D / JHMDB), by default `target_frames`.

Modes of `ReferringClips` (our design; the paper's sampling is not public):
- "train": one item per expression. A target frame is drawn among its `target_frames`, then a clip of T frames
  `frame_stride` apart that contains the target at a random position (the stride shrinks so that the clip fits
  in the video; the grid frame nearest the target is replaced by the target). A video shorter than T frames
  gives every frame, each repeated about T/N times (`repeat_indices`), in order. Draws come from
  `numpy.random.default_rng((seed, epoch, index))`, so a resumed run draws the same clips (`set_epoch`).
- "frames": one item per (expression, frame of `eval_frames`), the clip centred on that frame (frames
  `t - T//2 ... t + (T-1)//2`, `frame_stride` apart, indices past the ends replaced by the edge frames: the A2D /
  JHMDB protocol of MTTR). Adds `target_index` (the frame's position in the clip) and `target_frame`.
- "eval": one item per expression with the whole video's frame paths (no pixels read), for sliding-window
  inference (`sliding_windows`, `assign_frames`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vlalign.data.images import load_image
from vlalign.data.transforms import ResizeSquare
from vlalign.data.ytvos import Expression

__all__ = ["MODES", "ReferringClips", "assign_frames", "repeat_indices", "sliding_windows"]

MODES = ("train", "frames", "eval")
MAX_SELECTION = 8  # other expressions of the video per training clip (`selection_texts`)


def _positive_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def repeat_indices(num_frames: int, length: int) -> list[int]:
    """`length` sorted indices covering all `num_frames` (< length) frames, each repeated about evenly."""
    return [k * num_frames // length for k in range(length)]


def train_clip_indices(num_frames: int, length: int, target: int, stride: int, rng: np.random.Generator) -> list[int]:
    """Sorted indices of a clip of `length` frames containing `target` (see the module docstring, "train")."""
    if num_frames < length:
        return repeat_indices(num_frames, length)
    stride = min(stride, (num_frames - 1) // (length - 1)) if length > 1 else 1
    span = (length - 1) * stride
    start = int(rng.integers(max(0, target - span), min(target, num_frames - 1 - span) + 1))
    indices = [start + k * stride for k in range(length)]
    # |target - grid| <= stride / 2 for the nearest grid point, so the replacement keeps the order strict
    nearest = min(range(length), key=lambda k: abs(indices[k] - target))
    indices[nearest] = target
    return indices


def centred_clip_indices(num_frames: int, length: int, target: int, stride: int) -> list[int]:
    """`length` indices centred on `target` (position length // 2), clamped to the video (edge repeats)."""
    return [min(max(target + (k - length // 2) * stride, 0), num_frames - 1) for k in range(length)]


def sliding_windows(num_frames_total: int, num_frames: int, stride: int) -> list[list[int]]:
    """Windows of `num_frames` frame indices over a video of `num_frames_total` frames, for inference.

    Windows start at 0, stride, 2 * stride, ...; the last one is moved back to end on the last frame, so every
    window is full and every frame is covered (1 <= stride <= num_frames). A video shorter than the window gives
    one window of repeated frames (`repeat_indices`, as in training). Use `assign_frames` to know which window
    predicts each frame.
    """
    total = _positive_int(num_frames_total, "num_frames_total")
    length = _positive_int(num_frames, "num_frames")
    if not isinstance(stride, int) or not 1 <= stride <= length:
        raise ValueError(f"stride must be an int in 1..{length} (the window length) so that no frame is skipped, "
                         f"got {stride!r}")  # fmt: skip
    if total <= length:
        return [repeat_indices(total, length)]
    starts = list(range(0, total - length, stride)) + [total - length]
    return [list(range(s, s + length)) for s in starts]


def assign_frames(windows: list[list[int]], num_frames_total: int) -> list[tuple[int, int]]:
    """For every frame, (window index, position in that window) of the window that predicts it.

    A frame is predicted from the window in which it is most central (largest distance to the window's nearer
    end: the most temporal context on both sides); ties go to the earlier window and, within a window that repeats
    the frame, to the more central position.
    """
    best: list[tuple[int, int, int] | None] = [None] * num_frames_total  # (centrality, window, position)
    for w, window in enumerate(windows):
        for pos, frame in enumerate(window):
            centrality = min(pos, len(window) - 1 - pos)
            current = best[frame]
            if current is None or centrality > current[0]:
                best[frame] = (centrality, w, pos)
    missing = [i for i, b in enumerate(best) if b is None]
    if missing:
        raise ValueError(f"frames {missing[:10]} are in no window")
    return [(b[1], b[2]) for b in best]  # type: ignore[index]


def referred_first_ids(labels: torch.Tensor, obj_id: int) -> dict[int, int]:
    """{annotation id: number} for `referred_first`: `obj_id` -> 1, the clip's other objects -> 2, 3, ... in id
    order."""
    others = [int(i) for i in torch.unique(labels) if i != 0 and i != obj_id]
    return {obj_id: 1, **{i: k for k, i in enumerate(others, start=2)}}


def referred_first(labels: torch.Tensor, obj_id: int) -> torch.Tensor:
    """Object ids (T, S, S) -> the same objects numbered 1 = `obj_id` (the referred one), 2, 3, ... = the others
    in id order, 0 = background: what the query decoder's matching reads (vlalign/models/rvos/queries.py)."""
    out = torch.zeros_like(labels)
    for i, k in referred_first_ids(labels, obj_id).items():
        out[labels == i] = k
    return out


class ReferringClips(Dataset):
    """Clips of T frames at S x S with the referred object's masks (see the module docstring for the modes).

    Item (train / frames): `frames` float32 Tx3xSxS in [0, 1]; `masks` float32 TxSxS {0, 1}; `valid` bool T
    (the frame has an annotation); `objects` int64 TxSxS, every annotated object (`referred_first`: 1 = the
    referred one; readers without a label map give that one alone); `text`, `video`, `exp_id`;
    `frame_names` (T names, repeats possible);
    `orig_size` (H, W); `transform` (ResizeSquare params, for `invert_prediction`).
    Item (train, readers with a label map): also `selection_texts`, up to MAX_SELECTION other expressions of
    the video whose object is in the clip, and `selection_objects` (E,) int64, their objects' numbers in
    `objects` (the query decoder's score learns to choose among the clip's objects from every one of them).
    Item (eval): `video`, `exp_id`, `text`, `frame_paths`, `frame_names` (the whole video), `obj_id`.
    """

    def __init__(self, reader: Any, num_frames: int, input_size: int, mode: str = "train", seed: int = 0,
                 frame_stride: int = 1) -> None:  # fmt: skip
        if mode not in MODES:
            raise ValueError(f"ReferringClips mode must be one of {MODES}, got {mode!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"ReferringClips seed must be a non-negative int, got {seed!r}")
        self.reader, self.mode, self.seed, self.epoch = reader, mode, seed, 0
        self.num_frames = _positive_int(num_frames, "num_frames")
        self.frame_stride = _positive_int(frame_stride, "frame_stride")
        self.transform = ResizeSquare(_positive_int(input_size, "input_size"))
        self.expressions: list[Expression] = list(reader.expressions)
        if not self.expressions:
            raise ValueError(f"{reader!r} has no expressions")
        self._targets: list[list[str]] = []
        self._items: list[tuple[int, str]] = []  # frames mode: (expression index, target frame)
        self._by_video: dict[str, list[Expression]] = defaultdict(list)
        for e in self.expressions:
            if e.obj_id is not None:
                self._by_video[e.video].append(e)
        if mode != "eval":
            self._check_targets()

    def _check_targets(self) -> None:
        """Train and frames modes need a target for every expression: fail at once, not in epoch 3."""
        if not self.reader.has_annotations:
            raise ValueError(f"{self.reader!r} has no annotations: mode {self.mode!r} needs them (use mode='eval')")
        without = [e for e in self.expressions if e.obj_id is None]
        if without:
            first = without[0]
            raise ValueError(f"{self.reader!r}: {len(without)} expression(s) have no obj_id, e.g. video "
                             f"{first.video!r} expression {first.exp_id!r}; mode {self.mode!r} needs one")  # fmt: skip
        pick = getattr(self.reader, "eval_frames", None) if self.mode == "frames" else None
        self._targets = [(pick or self.reader.target_frames)(e) for e in self.expressions]
        empty = [e for e, t in zip(self.expressions, self._targets) if not t]
        if empty:
            shown = ", ".join(f"{e.video}/{e.exp_id} (obj_id {e.obj_id})" for e in empty[:5])
            raise ValueError(f"{self.reader!r}: the object of {len(empty)} expression(s) is on no annotated frame: "
                             f"{shown}{', ...' if len(empty) > 5 else ''}")  # fmt: skip
        if self.mode == "frames":
            self._items = [(i, f) for i, targets in enumerate(self._targets) for f in targets]

    def __len__(self) -> int:
        return len(self._items) if self.mode == "frames" else len(self.expressions)

    def set_epoch(self, epoch: int) -> None:
        """Select the clips of `epoch` (call before each epoch, in every worker's copy)."""
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch = epoch

    def clip(self, index: int) -> tuple[Expression, list[int], int]:
        """(expression, clip frame indices into expression.frames, target index) of item `index`, no pixels."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        if self.mode == "eval":
            exp = self.expressions[index]
            return exp, list(range(len(exp.frames))), -1
        if self.mode == "frames":
            exp_index, frame = self._items[index]
            exp = self.expressions[exp_index]
            target = exp.frames.index(frame)
            return exp, centred_clip_indices(len(exp.frames), self.num_frames, target, self.frame_stride), target
        exp, targets = self.expressions[index], self._targets[index]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        target = exp.frames.index(targets[int(rng.integers(len(targets)))])
        return exp, train_clip_indices(len(exp.frames), self.num_frames, target, self.frame_stride, rng), target

    def __getitem__(self, index: int) -> dict[str, Any]:
        exp, indices, target = self.clip(index)
        if self.mode == "eval":
            return {"video": exp.video, "exp_id": exp.exp_id, "text": exp.text,
                    "frame_paths": [self.reader.frame_path(exp.video, f) for f in exp.frames],
                    "frame_names": list(exp.frames), "obj_id": exp.obj_id}  # fmt: skip
        names = [exp.frames[i] for i in indices]
        loaded: dict[str, tuple[torch.Tensor, torch.Tensor, bool, dict, tuple[int, int], torch.Tensor]] = {}
        for name in dict.fromkeys(names):  # each distinct frame read once, even when the clip repeats it
            loaded[name] = self._load_frame(exp, name)
        sizes = {loaded[n][4] for n in loaded}
        if len(sizes) > 1:
            detail = ", ".join(f"{self.reader.frame_path(exp.video, n)} is {loaded[n][4][1]}x{loaded[n][4][0]}"
                               for n in loaded)  # fmt: skip
            raise ValueError(f"video {exp.video!r}: frames differ in size (W x H): {detail}")
        item = {
            "frames": torch.stack([loaded[n][0] for n in names]),
            "masks": torch.stack([loaded[n][1] for n in names]),
            "valid": torch.tensor([loaded[n][2] for n in names], dtype=torch.bool),
            "text": exp.text,
            "video": exp.video,
            "exp_id": exp.exp_id,
            "frame_names": names,
            "orig_size": loaded[names[0]][4],
            "transform": loaded[names[0]][3],
        }
        # readers without a label map know the referred object only: it is then the clip's one object
        labels = torch.stack([loaded[n][5] for n in names])
        has_labels = hasattr(self.reader, "label_map")
        item["objects"] = referred_first(labels, exp.obj_id) if has_labels else item["masks"].long()
        if self.mode == "train":
            numbers = referred_first_ids(labels, exp.obj_id) if has_labels else {}
            others = [e for e in self._by_video[exp.video] if e.exp_id != exp.exp_id and e.obj_id in numbers]
            others = others[:MAX_SELECTION]
            item["selection_texts"] = [e.text for e in others]
            item["selection_objects"] = torch.tensor([numbers[e.obj_id] for e in others], dtype=torch.long)
        if self.mode == "frames":
            item["target_index"] = indices.index(target)
            item["target_frame"] = exp.frames[target]
        return item

    def _load_frame(self, exp: Expression, name: str):
        """(image 3xSxS, mask SxS, annotated?, transform params, (H, W), object ids SxS) of one clip frame."""
        image = load_image(self.reader.frame_path(exp.video, name))
        annotated = self.reader.annotation_path(exp.video, name) is not None
        label_map = getattr(self.reader, "label_map", None)  # every object of the frame (palette-PNG layouts)
        labels = label_map(exp.video, name) if annotated and label_map is not None else None
        mask = (labels == exp.obj_id if labels is not None else
                self.reader.load_mask(exp.video, name, exp.obj_id) if annotated else None)
        if mask is not None and mask.shape != (image.height, image.width):
            where = self.reader.annotation_path(exp.video, name)
            raise ValueError(f"mask of video {exp.video!r} frame {name!r} ({where}) is {mask.shape[1]}x{mask.shape[0]} "
                             f"(W x H) but the frame is {image.width}x{image.height}")  # fmt: skip
        if mask is None:
            mask = np.zeros((image.height, image.width), dtype=np.uint8)
        image_t, mask_t, params = self.transform(image, mask.astype(np.uint8))
        objects = self.transform.labels(labels) if labels is not None else torch.zeros_like(mask_t, dtype=torch.long)
        return image_t, mask_t, annotated, params, (image.height, image.width), objects

    def __repr__(self) -> str:
        return (f"ReferringClips({self.reader!r}, mode={self.mode!r}, num_frames={self.num_frames}, "
                f"input_size={self.transform.size}, items={len(self)})")  # fmt: skip
