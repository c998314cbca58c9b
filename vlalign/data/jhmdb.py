"""JHMDB-Sentences (Gavrilyuk et al., CVPR 2018): evaluation only, in the layout MTTR reads.

    ROOT/jhmdb_annotation.txt                               CSV with header video_id,query (928 rows)
    ROOT/Rename_Images/<action>/<video>/<frame:05d>.png     frames, 1-based names
    ROOT/puppet_mask/<action>/<video>/puppet_mask.mat       "part_mask": H x W x T puppet masks (MATLAB v5)

One expression per row (exp_id = data-row number, obj_id = 1: the one annotated actor). Frame `k` (1-based) is
annotated when k <= T, with mask part_mask[:, :, k - 1]; the last frames of some videos have no mask.
The official protocol scores three frames per video drawn at random once and frozen in MTTR's
`jhmdb_sentences_samples_metadata.json` (entries [video_id, frame_path, mask_path, total_frames, text]):
`eval_frames` reads them from that file when it is given (`samples_metadata=`), otherwise draws three masked
frames per expression from `numpy.random.default_rng((seed, row))` (our stand-in: other frames than the paper's).
"""

from __future__ import annotations

import csv
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
from scipy.io import loadmat
from scipy.io.matlab import MatReadError

from vlalign.data.ytvos import Expression, frame_size, read_json

__all__ = ["JHMDBSentences", "read_puppet_mask"]

FRAMES_PER_VIDEO = 3  # MTTR's random.sample(frames, 3)
_MASK_CACHE = 4  # videos whose masks are kept: a clip reads one video; eval visits a video's frames in a row


def read_puppet_mask(path: str | os.PathLike) -> np.ndarray:
    """bool T x H x W masks of a puppet_mask.mat (stored H x W x T)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JHMDB puppet mask not found: {path}")
    try:
        content = loadmat(path)
    except (MatReadError, ValueError, OSError, NotImplementedError) as err:  # NotImplementedError: a v7.3 (HDF5) file
        raise ValueError(f"{path}: not a readable MATLAB v5 file ({err})") from err
    masks = content.get("part_mask")
    if masks is None or np.ndim(masks) != 3:
        shape = None if masks is None else np.shape(masks)
        raise ValueError(f"{path}: expected a 3-D 'part_mask' (H x W x T), got {shape}")
    return np.ascontiguousarray(np.transpose(masks, (2, 0, 1))) != 0


class JHMDBSentences:
    """JHMDB-Sentences expressions with frames, puppet masks and the protocol's evaluation frames."""

    image_ext = ".png"
    has_annotations = True

    def __init__(self, root: str | os.PathLike, samples_metadata: str | os.PathLike | None = None,
                 seed: int = 0) -> None:  # fmt: skip
        self.root, self.seed = Path(root), seed
        self.text_path = self.root / "jhmdb_annotation.txt"
        if not self.text_path.is_file():
            raise FileNotFoundError(f"JHMDB-Sentences annotation file not found: {self.text_path}")
        rows = list(csv.reader(self.text_path.read_text(encoding="utf-8").splitlines()))
        if not rows or [c.strip() for c in rows[0][:2]] != ["video_id", "query"]:
            raise ValueError(f"{self.text_path}: expected the header 'video_id,query', got "
                             f"{rows[0] if rows else 'an empty file'}")  # fmt: skip
        # video -> action folder, from the frame folders present
        images = self.root / "Rename_Images"
        if not images.is_dir():
            raise FileNotFoundError(f"JHMDB-Sentences frames folder not found: {images}")
        self.actions = {video.name: action.name for action in sorted(images.iterdir()) if action.is_dir()
                        for video in sorted(action.iterdir()) if video.is_dir()}  # fmt: skip
        self.expressions: list[Expression] = []
        self._rows: dict[tuple[str, str], int] = {}
        for number, row in enumerate(rows[1:]):
            if not row:
                continue
            where = f"{self.text_path}: line {number + 2}"
            if len(row) < 2:
                raise ValueError(f"{where}: expected video_id,query, got {row!r}")
            video, text = row[0].strip(), " ".join(",".join(row[1:]).split())
            if not text:
                raise ValueError(f"{where}: empty query")
            if video not in self.actions:
                raise FileNotFoundError(f"{where}: no frames folder Rename_Images/<action>/{video}")
            folder = images / self.actions[video] / video
            frames = sorted(p.stem for p in folder.glob(f"*{self.image_ext}"))
            if not frames:
                raise FileNotFoundError(f"{where}: no {self.image_ext} frames in {folder}")
            self.expressions.append(Expression(video, str(number), text, 1, frames))
            self._rows[(video, str(number))] = number
        self._masks: OrderedDict[str, np.ndarray] = OrderedDict()
        self._chosen = self._read_samples(Path(samples_metadata)) if samples_metadata is not None else None

    def frame_path(self, video: str, frame: str) -> Path:
        return self.root / "Rename_Images" / self.actions[video] / video / f"{frame}{self.image_ext}"

    def mask_path(self, video: str) -> Path:
        return self.root / "puppet_mask" / self.actions[video] / video / "puppet_mask.mat"

    def masks(self, video: str) -> np.ndarray:
        """bool T x H x W puppet masks of a video (cached for a few videos, read-only)."""
        if video in self._masks:
            self._masks.move_to_end(video)
        else:
            masks = read_puppet_mask(self.mask_path(video))
            masks.setflags(write=False)
            self._masks[video] = masks
            if len(self._masks) > _MASK_CACHE:
                self._masks.popitem(last=False)
        return self._masks[video]

    def annotation_path(self, video: str, frame: str) -> Path | None:
        """The video's puppet_mask.mat where it holds a mask for this frame, else None."""
        return self.mask_path(video) if 1 <= int(frame) <= len(self.masks(video)) else None

    def load_mask(self, video: str, frame: str, obj_id: int | None) -> np.ndarray:
        if obj_id != 1 or self.annotation_path(video, frame) is None:
            return np.zeros(frame_size(self.frame_path(video, frame)), dtype=bool)
        return self.masks(video)[int(frame) - 1].copy()

    def target_frames(self, expression: Expression) -> list[str]:
        """Every frame that has a puppet mask."""
        count = len(self.masks(expression.video))
        return [f for f in expression.frames if 1 <= int(f) <= count]

    def eval_frames(self, expression: Expression) -> list[str]:
        """The frames the protocol scores: MTTR's frozen three when given, else a seeded draw of three."""
        if self._chosen is not None:
            chosen = self._chosen.get((expression.video, expression.text))
            if not chosen:
                raise ValueError(f"the samples metadata has no frame for video {expression.video!r} with the "
                                 f"query {expression.text!r}")  # fmt: skip
            return chosen
        masked = self.target_frames(expression)
        rng = np.random.default_rng((self.seed, self._rows[(expression.video, expression.exp_id)]))
        picks = rng.choice(len(masked), size=min(FRAMES_PER_VIDEO, len(masked)), replace=False)
        return [masked[i] for i in sorted(picks)]

    def _read_samples(self, path: Path) -> dict[tuple[str, str], list[str]]:
        """{(video, query): sorted frame names} from MTTR's samples metadata (frame paths are theirs: only the
        file name is used)."""
        content = read_json(path, "JHMDB samples metadata")
        if not isinstance(content, list):
            raise ValueError(f"{path}: expected a list of [video_id, frame_path, mask_path, total_frames, text]")
        chosen: dict[tuple[str, str], list[str]] = {}
        for k, entry in enumerate(content):
            if not isinstance(entry, list) or len(entry) != 5 or not all(isinstance(v, str) for v in entry[:2]):
                raise ValueError(f"{path}: entry {k}: expected [video_id, frame_path, mask_path, total_frames, "
                                 f"text], got {entry!r:.80}")  # fmt: skip
            name = Path(entry[1].replace("\\", "/")).stem
            key = (entry[0], " ".join(str(entry[4]).split()))
            chosen.setdefault(key, []).append(name)
        return {key: sorted(set(names)) for key, names in chosen.items()}

    def __len__(self) -> int:
        return len(self.expressions)

    def __repr__(self) -> str:
        return f"JHMDBSentences({str(self.root)!r}, expressions={len(self.expressions)})"
