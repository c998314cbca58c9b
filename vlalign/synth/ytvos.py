"""The synthetic referring-video benchmark, written in the exact Ref-YouTube-VOS layout.

    DIR/meta_expressions/train/meta_expressions.json  {"videos": {vid: {"expressions": {exp_id: {"exp",
                                                      "obj_id"}}, "frames": [...]}}}
    DIR/meta_expressions/valid/meta_expressions.json  the valid *and* test videos, as released (see below)
    DIR/meta_expressions/test/meta_expressions.json   the test videos (no obj_id)
    DIR/<split>/meta.json                             {"videos": {vid: {"objects": {obj_id: {"category",
                                                      "frames"}}}}} (train and valid)
    DIR/<split>/JPEGImages/<vid>/<frame>.jpg          test videos' frames live in valid/, as in the release
    DIR/<split>/Annotations/<vid>/<frame>.png         palette PNG, pixel value = obj_id (train and valid)
    DIR/valid_gt/Annotations/<vid>/<exp_id>/<frame>.png  the valid ground truth in the submission layout
                                                      (0/255), what `vlalign score ytvos --gt` reads
    DIR/synth_info.json   {"<split>/<vid>/<exp_id>": {"kind", "motion_only", "motion", "obj_id", ...}}
    DIR/dataset.json      summary and generation parameters; DIR/README.txt   what this is

Departures from the released data, all on purpose: the synthetic valid split *has* Annotations, meta.json and
obj_id in its expressions (so that predictions can be scored offline); the test videos have none of these.

Frames are named 00000, 00005, ... (Ref-YouTube-VOS keeps every 5th frame of the 30 fps videos). Default frames
are 160x120 (4:3; the real set is 1280x720, but CPU models resize to ~128 anyway), 12-20 per video.

Expressions are programs: `Select` (appearance, "the big red circle"), `Rank` (position in *every* frame, "the
square on the left", from `vlalign.synth.expressions`) and `Moving` ("the square moving to the left"). Each is
kept only when it selects exactly its target, with no borderline alternative (a size word is never used while
a growing or shrinking object could also be meant). An expression is "motion_only" when it names a motion and
its target has a twin: another object of the same kind, colour and size class (or both resizing), so that no
appearance or single frame can tell them apart. Every video holds such a twin group, and at least half of
every video's expressions are motion-only (other expressions are dropped at random when needed; about two
thirds of the default set are motion-only).

Each video is drawn from its own generator `numpy.random.default_rng([seed, index + 1])`: the output is a pure
function of the arguments (the same arguments give the same bytes).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vlalign.synth import SYNTH_INFO
from vlalign.synth.expressions import Rank, Select, describe, refers_uniquely
from vlalign.synth.motion import FrameScene, Track, frame_scenes, render_video, sample_tracks

DEFAULT_NUM_VIDEOS = 350  # 290 train, 50 valid, 10 test
DEFAULT_SEED = 0
DEFAULT_WIDTH, DEFAULT_HEIGHT = 160, 120
DEFAULT_FRAMES = (12, 20)  # frames per video, inclusive
SPLIT_SHARES = {"valid": 0.143, "test": 0.029}  # the rest is train
OBJECTS_PER_VIDEO = (2, 4)
EXPRESSIONS_PER_OBJECT = {"twin": (2, 3), "other": (2, 3)}
TRIES_PER_FORM = 8
# program forms drawn for a target with / without a twin (a twin can only be named by motion or position)
FORM_WEIGHTS = {"twin": {"motion": 0.8, "position": 0.2},
                "other": {"appearance": 0.6, "position": 0.2, "motion": 0.2}}  # fmt: skip


@dataclass(frozen=True)
class Moving:
    """The `base` objects whose motion is `motion`."""

    base: Select
    motion: str


VideoProgram = Select | Rank | Moving


@dataclass
class VideoExpression:
    target: int  # index into the video's tracks (obj_id = target + 1)
    program: VideoProgram
    text: str

# ---------------------------------------------------------------------------------------------------------
# evaluation


def _base_match(select: Select, track: Track) -> tuple[bool, bool]:
    """(surely, possibly) matched: a size word possibly means a resizing object, which is never sure."""
    if (select.kind and select.kind != track.kind) or (select.colour and select.colour != track.colour):
        return False, False
    if select.size is None or select.size == track.size:
        return True, True
    return False, track.size == "changing"


def refers_uniquely_video(program: VideoProgram, tracks: list[Track], scenes: list[FrameScene], target: int) -> bool:
    """True when `program` selects exactly track `target` in every frame, with no borderline alternative."""
    base = program if isinstance(program, Select) else program.base
    matched = [_base_match(base, tr) for tr in tracks]
    if any(maybe and not sure for sure, maybe in matched):
        return False  # "the big square" while a square grows: a reader could mean either
    if isinstance(program, Rank):
        return all(refers_uniquely(program, scene, target) for scene in scenes)
    hits = [i for i, (sure, _) in enumerate(matched) if sure]
    if isinstance(program, Moving):
        hits = [i for i in hits if tracks[i].motion == program.motion]
    return hits == [target]


def twins(tracks: list[Track], i: int) -> list[int]:
    """Objects that look like track i: same kind and colour, and same size class (or both resizing)."""
    me = tracks[i]
    return [j for j, o in enumerate(tracks)
            if j != i and o.kind == me.kind and o.colour == me.colour and o.size == me.size]  # fmt: skip


def motion_only(tracks: list[Track], expression: VideoExpression) -> bool:
    """Only motion tells the target from a twin (the expression names a motion and the target has a twin)."""
    return isinstance(expression.program, Moving) and bool(twins(tracks, expression.target))


def kind_of(program: VideoProgram) -> str:
    return "motion" if isinstance(program, Moving) else "position" if isinstance(program, Rank) else "appearance"


# ---------------------------------------------------------------------------------------------------------
# sampling and wording


def _subset(rng: np.random.Generator, track: Track, p_kind: float, p_colour: float, p_size: float) -> Select:
    size = track.size if track.size != "changing" and rng.random() < p_size else None
    return Select(kind=track.kind if rng.random() < p_kind else None,
                  colour=track.colour if rng.random() < p_colour else None, size=size)  # fmt: skip


def _candidate(rng: np.random.Generator, track: Track, form: str) -> VideoProgram | None:
    if form == "appearance":
        program = _subset(rng, track, 0.85, 0.7, 0.5)
        return program if program != Select() else None
    if form == "position":
        return Rank(_subset(rng, track, 0.8, 0.5, 0.3), str(rng.choice(["left", "right", "top", "bottom"])))
    return Moving(_subset(rng, track, 0.85, 0.5, 0.25), track.motion)


def _programs(rng: np.random.Generator, tracks: list[Track], scenes: list[FrameScene], target: int, n: int,
              weights: dict[str, float]) -> list[VideoProgram]:  # fmt: skip
    """Up to `n` programs for `target`: each draws a form, then tries a few candidates of that form and falls
    back to the other forms (so that hard forms, like a position that holds in every frame, keep their share)."""
    found: list[VideoProgram] = []
    forms = list(weights)
    for _ in range(n):
        first = str(rng.choice(forms, p=list(weights.values())))
        for form in [first] + [f for f in forms if f != first]:
            candidates = (_candidate(rng, tracks[target], form) for _ in range(TRIES_PER_FORM))
            program = next((p for p in candidates if p is not None and p not in found
                            and refers_uniquely_video(p, tracks, scenes, target)), None)  # fmt: skip
            if program is not None:
                found.append(program)
                break
    return found


MOTION_PHRASES = {
    "left": ("moving to the left", "going left", "that moves left", "sliding to the left", "heading left"),
    "right": ("moving to the right", "going right", "that moves right", "sliding to the right", "heading right"),
    "up": ("moving up", "going up", "that moves upwards", "rising", "heading to the top"),
    "down": ("moving down", "going down", "that moves downwards", "falling", "heading to the bottom"),
    "still": ("that stays still", "that does not move", "standing still", "not moving", "staying in place"),
    "rotate": ("that rotates", "spinning around", "turning in place", "that spins"),
    "grow": ("that grows", "getting bigger", "that expands", "growing in size"),
    "shrink": ("that shrinks", "getting smaller", "that becomes smaller", "shrinking in size"),
}
MOTION_ADJECTIVES = {"still": ("motionless", "static"), "rotate": ("spinning", "rotating"), "grow": ("growing",),
                     "shrink": ("shrinking",)}  # fmt: skip


def word(rng: np.random.Generator, program: VideoProgram) -> str:
    """One wording of `program` (lower case, no punctuation, as most Ref-YouTube-VOS expressions)."""
    if not isinstance(program, Moving):
        return describe(rng, program, determiner=True)
    adjectives = MOTION_ADJECTIVES.get(program.motion)
    if adjectives and program.base.size is None and rng.random() < 0.35:  # "the spinning red star"
        noun = describe(rng, program.base, determiner=False)
        return f"the {adjectives[int(rng.integers(len(adjectives)))]} {noun}"
    phrases = MOTION_PHRASES[program.motion]
    return f"{describe(rng, program.base, determiner=True)} {phrases[int(rng.integers(len(phrases)))]}"


def make_video(seed: int, index: int, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT,
               frames: tuple[int, int] = DEFAULT_FRAMES) -> tuple[list[Track], np.ndarray, np.ndarray,
                                                                  list[VideoExpression]]:  # fmt: skip
    """One video: its tracks, frames TxHxWx3 uint8, label maps TxHxW uint8 (obj_id) and its expressions."""
    rng = np.random.default_rng([seed, index + 1])
    num_frames = int(rng.integers(frames[0], frames[1] + 1))
    for _ in range(100):  # two objects at least (every expression has a distractor), a twin pair among them
        tracks = sample_tracks(rng, num_frames, height, width, int(rng.integers(*OBJECTS_PER_VIDEO, endpoint=True)))
        if len(tracks) < 2 or not any(twins(tracks, i) for i in range(len(tracks))):
            continue
        pixels, labels = render_video(rng, tracks, height, width)
        expressions = _video_expressions(rng, tracks, frame_scenes(tracks, height, width))
        if expressions:  # rarely none is unique (readers reject a video without expressions): draw again
            break
    else:
        raise ValueError(f"no room for moving objects in {width}x{height} frames over {num_frames} frames")
    return tracks, pixels, labels, expressions


def _video_expressions(rng: np.random.Generator, tracks: list[Track], scenes) -> list[VideoExpression]:
    """The expressions of one video, at least half of them motion-only (possibly none at all)."""
    expressions: list[VideoExpression] = []
    for target in range(len(tracks)):
        group = "twin" if twins(tracks, target) else "other"
        wanted = int(rng.integers(*EXPRESSIONS_PER_OBJECT[group], endpoint=True))
        for program in _programs(rng, tracks, scenes, target, wanted, FORM_WEIGHTS[group]):
            text = word(rng, program)
            if all(text != e.text for e in expressions):  # the same words never name two targets
                expressions.append(VideoExpression(target, program, text))
    # At least half of each video's expressions are motion-only: drop a random few of the others if needed.
    only = [motion_only(tracks, e) for e in expressions]
    others = [k for k, m in enumerate(only) if not m]
    excess = max(0, len(others) - sum(only))
    drop = set(rng.choice(others, size=excess, replace=False).tolist()) if excess else set()
    return [e for k, e in enumerate(expressions) if k not in drop]


# ---------------------------------------------------------------------------------------------------------
# writing the layout


def assign_splits(num_videos: int, seed: int) -> list[str]:
    """The split of each video index: fixed shares, every split non-empty, order shuffled by `seed`."""
    if num_videos < 3:
        raise ValueError(f"num_videos must be >= 3 (one video per split at least), got {num_videos}")
    counts = {name: max(1, round(share * num_videos)) for name, share in SPLIT_SHARES.items()}
    labels = ["train"] * (num_videos - sum(counts.values())) + [n for n, k in counts.items() for _ in range(k)]
    order = np.random.default_rng([seed, 0x5EED]).permutation(num_videos)  # its own stream, not a video's
    return [labels[i] for i in order]


def video_id(seed: int, index: int) -> str:
    """Ten hex digits, like the real ids ("003234408d"), fixed by (seed, index)."""
    return hashlib.sha1(f"vlalign-ytvos:{seed}:{index}".encode()).hexdigest()[:10]


def frame_name(t: int) -> str:
    return f"{5 * t:05d}"


def _palette() -> list[int]:
    """The PASCAL VOC / DAVIS colour map: index i -> the colour read by every VOS viewer."""
    out = []
    for i in range(256):
        r = g = b = 0
        c = i
        for k in range(8):
            r |= ((c >> 0) & 1) << (7 - k)
            g |= ((c >> 1) & 1) << (7 - k)
            b |= ((c >> 2) & 1) << (7 - k)
            c >>= 3
        out += [r, g, b]
    return out


PALETTE = _palette()


def _save_label(labels: np.ndarray, path: Path) -> None:
    image = Image.fromarray(labels)  # mode "L"; putpalette turns it into "P" with the same indices
    image.putpalette(PALETTE)
    image.save(path)


def _write_video(out: Path, split: str, vid: str, pixels: np.ndarray, labels: np.ndarray | None) -> None:
    folder = "valid" if split == "test" else split  # the test videos were released among the valid ones
    (out / folder / "JPEGImages" / vid).mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(pixels):
        Image.fromarray(frame).save(out / folder / "JPEGImages" / vid / f"{frame_name(t)}.jpg", quality=90)
    if labels is not None:
        (out / folder / "Annotations" / vid).mkdir(parents=True, exist_ok=True)
        for t, label in enumerate(labels):
            _save_label(label, out / folder / "Annotations" / vid / f"{frame_name(t)}.png")


def _write_expression_gt(out: Path, vid: str, labels: np.ndarray, expressions: list[VideoExpression]) -> None:
    for k, e in enumerate(expressions):
        folder = out / "valid_gt" / "Annotations" / vid / str(k)
        folder.mkdir(parents=True, exist_ok=True)
        for t, label in enumerate(labels):
            Image.fromarray(np.where(label == e.target + 1, 255, 0).astype(np.uint8)).save(
                folder / f"{frame_name(t)}.png")  # fmt: skip


def generate_ytvos(out_dir: str | Path, num_videos: int = DEFAULT_NUM_VIDEOS, seed: int = DEFAULT_SEED, *,
                   width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT,
                   frames: tuple[int, int] = DEFAULT_FRAMES) -> dict[str, Any]:  # fmt: skip
    """Write the synthetic Ref-YouTube-VOS set to `out_dir`; return a summary (counts per split, parameters)."""
    if min(width, height) < 64:
        raise ValueError(f"frames must be at least 64x64 px, got width={width}, height={height}")
    if not 2 <= frames[0] <= frames[1]:
        raise ValueError(f"need 2 <= min frames <= max frames, got {frames}")
    out = Path(out_dir)
    splits = assign_splits(num_videos, seed)
    meta_exp: dict[str, dict[str, Any]] = {"train": {}, "valid": {}, "test": {}}
    meta: dict[str, dict[str, Any]] = {"train": {}, "valid": {}}
    info: dict[str, dict[str, Any]] = {}
    for index, split in enumerate(splits):
        vid = video_id(seed, index)
        tracks, pixels, labels, expressions = make_video(seed, index, width, height, frames)
        _write_video(out, split, vid, pixels, None if split == "test" else labels)
        names = [frame_name(t) for t in range(len(pixels))]
        entry = {"expressions": {str(k): {"exp": e.text} if split == "test" else
                                 {"exp": e.text, "obj_id": str(e.target + 1)} for k, e in enumerate(expressions)},
                 "frames": names}  # fmt: skip
        meta_exp[split][vid] = entry
        if split != "test":
            objects = {str(i + 1): {"category": tr.kind, "frames": [n for n, v in zip(names, tr.visible) if v.any()]}
                       for i, tr in enumerate(tracks)}  # fmt: skip
            meta[split][vid] = {"objects": objects}
        if split == "valid":
            _write_expression_gt(out, vid, labels, expressions)
        for k, e in enumerate(expressions):
            tr, twin_ids = tracks[e.target], twins(tracks, e.target)
            info[f"{split}/{vid}/{k}"] = {
                "kind": kind_of(e.program), "motion_only": motion_only(tracks, e),
                "motion": tr.motion, "obj_id": e.target + 1, "category": tr.kind, "colour": tr.colour,
                "size": tr.size, "twins": [j + 1 for j in twin_ids], "text": e.text,
            }  # fmt: skip
    _dump(out / "meta_expressions" / "train" / "meta_expressions.json", meta_exp["train"])
    _dump(out / "meta_expressions" / "valid" / "meta_expressions.json", {**meta_exp["valid"], **meta_exp["test"]})
    _dump(out / "meta_expressions" / "test" / "meta_expressions.json", meta_exp["test"])
    for split in ("train", "valid"):
        _dump(out / split / "meta.json", meta[split])
    with open(out / SYNTH_INFO, "w") as f:
        json.dump(dict(sorted(info.items())), f, indent=1)
    summary = {"out_dir": str(out), "seed": seed, "num_videos": num_videos, "width": width, "height": height,
               "frames": list(frames), **_counts(info, splits)}  # fmt: skip
    with open(out / "dataset.json", "w") as f:  # without out_dir: same arguments, same bytes, wherever written
        json.dump({k: v for k, v in summary.items() if k != "out_dir"}, f, indent=2)
    (out / "README.txt").write_text(_README.format(**summary))
    return summary


def _dump(path: Path, videos: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump({"videos": dict(sorted(videos.items()))}, f, separators=(",", ":"))


def _counts(info: dict[str, dict[str, Any]], splits: list[str]) -> dict[str, Any]:
    per_split = {}
    for name in ("train", "valid", "test"):
        rows = [v for k, v in info.items() if k.startswith(name + "/")]
        per_split[name] = {"videos": splits.count(name), "expressions": len(rows),
                           "motion_only": sum(r["motion_only"] for r in rows)}  # fmt: skip
    kinds: dict[str, int] = {}
    for row in info.values():
        kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
    share = sum(r["motion_only"] for r in info.values()) / max(len(info), 1)
    return {"splits": per_split, "expression_kinds": dict(sorted(kinds.items())), "motion_only_share": round(share, 3)}


_README = """vlalign synthetic referring-video benchmark (Ref-YouTube-VOS layout)

Generated by `vlalign synth ytvos --num-videos {num_videos} --seed {seed}` ({width}x{height} px, {frames[0]}-{frames[1]}
frames per video, named 00000, 00005, ...). Moving shapes on textured backgrounds; every expression selects exactly
one object in every frame. Expressions marked motion_only in synth_info.json name an object that has an identical
twin (same shape, colour and size class): only its motion tells them apart. share: {motion_only_share}.
Unlike the released data, valid has Annotations, meta.json and obj_id (for offline scoring; also in the submission
layout under valid_gt/); the test videos (listed in meta_expressions/test) have none.
This data is synthetic: numbers measured on it say nothing about Ref-YouTube-VOS itself.
"""
