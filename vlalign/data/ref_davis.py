"""Ref-DAVIS17 (Khoreva et al., ACCV 2018) read from the DAVIS-2017 release and the MPI text annotations.

Layout (as ReferFormer's docs/data.md lays it out):

    ROOT/DAVIS/JPEGImages/480p/<video>/<frame>.jpg
    ROOT/DAVIS/Annotations_unsupervised/480p/<video>/<frame>.png   palette PNG, index = object id
    ROOT/DAVIS/ImageSets/2017/{train,val}.txt                       60 / 30 video names, one per line
    ROOT/davis_text_annotations/Davis17_annot1.txt, Davis17_annot1_full_video.txt   (utf-8)
    ROOT/davis_text_annotations/Davis17_annot2.txt, Davis17_annot2_full_video.txt   (latin-1)

Each text line is `<video> <obj_id> "<expression>"`. Three video names are misspelt in the text files and are
mapped to the DAVIS folder names (clasic-car, dog-scale, motor-bike). Annotators: 0 = annot1 (first frame),
1 = annot1 (full video), 2 = annot2 (first frame), 3 = annot2 (full video). Expression ids follow ReferFormer's
conversion to the Ref-YouTube-VOS layout: exp_id = 4 * (object's rank in the video, by id) + annotator, so
`int(exp_id) % 4` is the annotator and the official protocol (one unsupervised DAVIS evaluation per annotator,
the four J&F averaged) can be run per annotator (`annotator_of`, `annotators=`).
Our choices where ReferFormer's script is silent: annotators are paired by obj_id (the script pairs them by
position, the same thing when all four describe the same objects); an object an annotator did not describe has
no expression for that annotator; a repeated (video, obj_id) line keeps the first sentence (`duplicates`).
"""

from __future__ import annotations

import os
from pathlib import Path

from vlalign.data.ytvos import Expression, LabelMapReader

__all__ = ["ANNOTATOR_FILES", "NAME_FIXES", "RefDAVIS17", "annotator_of", "read_annotator_file"]

ANNOTATOR_FILES = (
    ("Davis17_annot1.txt", "utf-8-sig"),  # -sig: a byte-order mark, if any, is not part of the first video name
    ("Davis17_annot1_full_video.txt", "utf-8-sig"),
    ("Davis17_annot2.txt", "latin-1"),
    ("Davis17_annot2_full_video.txt", "latin-1"),
)
NAME_FIXES = {"clasic-car": "classic-car", "dog-scale": "dogs-scale", "motor-bike": "motorbike"}
SPLITS = ("train", "val")


def annotator_of(expression: Expression) -> int:
    """0..3: which of the four annotator files an expression comes from."""
    return int(expression.exp_id) % 4


def read_annotator_file(path: str | os.PathLike, encoding: str) -> tuple[dict[tuple[str, int], str], list[str]]:
    """{(video, obj_id): sentence} of one annotator file, and the repeated "video obj_id" keys (first kept)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Ref-DAVIS17 text annotation file not found: {path}")
    try:
        lines = path.read_text(encoding=encoding).splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not {encoding} text ({err}); the annot1 files are utf-8, annot2 latin-1") from err
    sentences: dict[tuple[str, int], str] = {}
    duplicates = []
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 3:
            raise ValueError(f"{path}: line {number}: expected '<video> <obj_id> \"<expression>\"', got {line!r}")
        video, obj_text, text = NAME_FIXES.get(parts[0], parts[0]), parts[1], " ".join(parts[2:])
        if not obj_text.isdigit() or int(obj_text) < 1:
            raise ValueError(f"{path}: line {number}: the object id must be a positive int, got {obj_text!r}")
        if len(text) >= 2 and text[0] == text[-1] == '"':
            text = text[1:-1].strip()
        if not text:
            raise ValueError(f"{path}: line {number}: empty expression")
        key = (video, int(obj_text))
        if key in sentences:
            duplicates.append(f"{path.name}:{number}: {video} {obj_text}")
            continue
        sentences[key] = text
    return sentences, duplicates


class RefDAVIS17(LabelMapReader):
    """Ref-DAVIS17 expressions of one split ("train" or "val"), read from the original files.

    annotators: which of the four annotator files to use (default all). annotations: the DAVIS folder of masks
    ("Annotations_unsupervised", the protocol's; "Annotations" for the semi-supervised ids).
    """

    def __init__(self, root: str | os.PathLike, split: str = "val", annotators: tuple[int, ...] = (0, 1, 2, 3),
                 annotations: str = "Annotations_unsupervised", resolution: str = "480p") -> None:  # fmt: skip
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"RefDAVIS17 split must be one of {SPLITS}, got {split!r}")
        if not annotators or any(a not in range(4) for a in annotators):
            raise ValueError(f"annotators must be a non-empty subset of 0..3, got {annotators!r}")
        self.root, self.split, self.annotators = Path(root), split, tuple(sorted(set(annotators)))
        davis = self.root / "DAVIS"
        self.image_dir = davis / "JPEGImages" / resolution
        self.annotation_dir = davis / annotations / resolution
        self.split_file = davis / "ImageSets" / "2017" / f"{split}.txt"
        if not self.split_file.is_file():
            raise FileNotFoundError(f"DAVIS-2017 split file not found: {self.split_file}")
        self.videos = [v for v in self.split_file.read_text(encoding="utf-8").split() if v]
        if not self.videos:
            raise ValueError(f"{self.split_file}: lists no videos")
        text_dir = self.root / "davis_text_annotations"
        files, self.duplicates = [], []
        for name, encoding in ANNOTATOR_FILES:
            sentences, duplicates = read_annotator_file(text_dir / name, encoding)
            files.append(sentences)
            self.duplicates += duplicates
        self.expressions = []
        for video in self.videos:
            folder = self.image_dir / video
            if not folder.is_dir():
                raise FileNotFoundError(f"frames folder of video {video!r} ({self.split_file}) not found: {folder}")
            frames = sorted(p.stem for p in folder.glob("*.jpg"))
            if not frames:
                raise FileNotFoundError(f"no .jpg frames in {folder}")
            objects = sorted({obj for sentences in files for v, obj in sentences if v == video})
            if not objects:
                raise ValueError(f"video {video!r} of {self.split_file} has no expression in {text_dir}")
            for rank, obj_id in enumerate(objects):
                for annotator in self.annotators:
                    text = files[annotator].get((video, obj_id))
                    if text is not None:
                        exp_id = str(4 * rank + annotator)
                        self.expressions.append(Expression(video, exp_id, text, obj_id, list(frames)))

    def __len__(self) -> int:
        return len(self.expressions)

    def __repr__(self) -> str:
        return (f"RefDAVIS17({str(self.root)!r}, split={self.split!r}, annotators={self.annotators}, "
                f"videos={len(self.videos)}, expressions={len(self.expressions)})")  # fmt: skip
