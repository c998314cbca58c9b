"""Moving shapes for the synthetic referring-video benchmark: tracks, their sampling and their rendering.

A `Track` is one object over a whole video: a shape of `vlalign.synth.scenes` (same outlines, colours and
size classes) whose centre, radius and rotation follow one `motion` at constant speed:

- "left", "right", "up", "down": a straight translation. The start is drawn so that the whole path stays
  inside the frame, so "moving to the left" is true in every frame and every clip (no bounce);
- "still": nothing changes; "rotate": spins in place (never a circle, whose rotation is invisible);
- "grow" / "shrink": the radius goes linearly from the "small" to the "big" size class (or back); the size
  class of such a track is "changing".

Objects are painted in order (later ones occlude earlier ones); every object keeps at least `MIN_VISIBLE` of
its area in every frame, so each object is present and recognisable in every frame. The background is one
textured still image per video (a static camera), with fresh sensor noise in each frame.

Geometry is in pixels (x right, y down); speeds are fractions of min(H, W) per frame, so the look of the set
does not depend on the chosen frame size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# drawing code shared with the image benchmark (one definition of every outline, colour and texture)
from vlalign.synth.scenes import COLOURS, MIN_VISIBLE, SIZE_RANGES, _background, _outline, _place, polygon_mask

# Kinds that stay recognisable at a radius of ~8 px (the small class at 120 px frames).
VIDEO_KINDS: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "cross")
MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "still", "rotate", "grow", "shrink")
MOTION_WEIGHTS: dict[str, float] = {
    "left": 0.12, "right": 0.12, "up": 0.12, "down": 0.12, "still": 0.22, "rotate": 0.1, "grow": 0.1, "shrink": 0.1,
}  # fmt: skip
CONSTANT_SIZE_MOTIONS = ("left", "right", "up", "down", "still", "rotate")
TRANSLATIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
SPEED = (0.02, 0.034)  # translation, fraction of min(H, W) per frame: 2.4-4.1 px at 120 px
SPIN = (0.12, 0.25)  # rotation, radians per frame: below half of any kind's symmetry angle, so the sense is clear
TWIN_TRIPLE_PROB = 0.2  # share of twin groups with three members (when the video has room)
TWIN_GROWTH_PROB = 0.2  # share of twin pairs that are grow + shrink (their sizes cross mid-video)
OVERLAP_PROB = 0.3  # share of objects allowed to pass partly over an earlier one
FRAME_NOISE = 2.5  # grey sensor noise added to each frame (the background's own grain is static)


@dataclass
class Track:
    """One object over T frames. Arrays are per frame: cx, cy, r (T,) in px, angle (T,) in radians."""

    kind: str
    colour: str
    size: str  # "small" | "big" | "changing" (grow / shrink)
    motion: str
    cx: np.ndarray
    cy: np.ndarray
    r: np.ndarray
    angle: np.ndarray
    outline: np.ndarray = field(repr=False)  # unit outline (N, 2)
    hole: np.ndarray | None = field(repr=False)
    full: np.ndarray = field(repr=False)  # bool TxHxW, the whole silhouette in each frame
    visible: np.ndarray = field(repr=False)  # bool TxHxW, what later objects leave of it

    def at(self, t: int) -> FrameObject:
        """The object in frame t, as the duck-typed scene object of `vlalign.synth.expressions`."""
        return FrameObject(self.kind, self.colour, self.size, float(self.cx[t]), float(self.cy[t]), float(self.r[t]))


@dataclass(frozen=True)
class FrameObject:
    kind: str
    colour: str
    size: str
    cx: float
    cy: float
    r: float


@dataclass(frozen=True)
class FrameScene:
    """One frame's objects, for the position programs of `vlalign.synth.expressions` (evaluated per frame)."""

    height: int
    width: int
    objects: tuple[FrameObject, ...]

    @property
    def scale(self) -> float:
        return float(min(self.height, self.width))


def frame_scenes(tracks: list[Track], height: int, width: int) -> list[FrameScene]:
    num_frames = len(tracks[0].cx)
    return [FrameScene(height, width, tuple(tr.at(t) for tr in tracks)) for t in range(num_frames)]


# ---------------------------------------------------------------------------------------------------------
# sampling


def _radii(rng: np.random.Generator, size: str, motion: str, num_frames: int, scale: float) -> np.ndarray:
    small, big = (float(rng.uniform(*SIZE_RANGES[s])) * scale for s in ("small", "big"))
    if motion == "grow":
        return np.linspace(small, big, num_frames)
    if motion == "shrink":
        return np.linspace(big, small, num_frames)
    return np.full(num_frames, big if size == "big" else small)


def _path(rng: np.random.Generator, motion: str, r: np.ndarray, height: int, width: int
          ) -> tuple[np.ndarray, np.ndarray] | None:  # fmt: skip
    """Centres (T,), (T,) for `motion`, wholly inside the frame; None when the frame is too small for it."""
    num_frames, scale = len(r), min(height, width)
    pad = 1.2 * float(r.max()) + 2  # outlines reach ~1.1 r from the centre
    if width - pad <= pad or height - pad <= pad:
        return None
    if motion not in TRANSLATIONS:
        cx, cy = float(rng.uniform(pad, width - pad)), float(rng.uniform(pad, height - pad))
        return np.full(num_frames, cx), np.full(num_frames, cy)
    ux, uy = TRANSLATIONS[motion]
    room = (width if ux else height) - 2 * pad  # the free length along the motion
    top = min(SPEED[1] * scale, room / (num_frames - 1))
    if top < SPEED[0] * scale:
        return None
    travel = float(rng.uniform(SPEED[0] * scale, top)) * (num_frames - 1)
    # the start leaves `travel` of room in front: uniform over all paths that fit
    along0 = float(rng.uniform(pad, pad + room - travel))
    steps = np.linspace(0.0, travel, num_frames)
    across = np.full(num_frames, float(rng.uniform(pad, (height if ux else width) - pad)))
    along = along0 + steps if (ux + uy) > 0 else (along0 + travel) - steps
    return (along, across) if ux else (across, along)


def _silhouettes(outline: np.ndarray, hole: np.ndarray | None, cx: np.ndarray, cy: np.ndarray, r: np.ndarray,
                 angle: np.ndarray, height: int, width: int) -> np.ndarray:  # fmt: skip
    """Bool TxHxW: the outline rasterised in each frame (pycocotools, as for the image benchmark)."""
    masks = []
    for t in range(len(cx)):
        m = polygon_mask([_place(outline, cx[t], cy[t], r[t], angle[t])], height, width)
        if hole is not None:
            m &= ~polygon_mask([_place(hole, cx[t], cy[t], r[t], angle[t])], height, width)
        masks.append(m)
    return np.stack(masks)


def _appearances(rng: np.random.Generator, n: int) -> list[tuple[str, str, str, str]]:
    """(kind, colour, size, motion) per object: a small palette per video, and one twin group.

    Few kinds and colours per video make shared attributes common. A twin group is 2-3 objects of one kind,
    colour and size class with distinct motions: only motion tells them apart. Its motions are either
    distinct constant-size motions or the pair grow + shrink, never one resizing and one constant-size twin
    (a single frame would then tell the grower by its size alone).
    """
    kinds = [str(k) for k in rng.choice(VIDEO_KINDS, size=int(rng.integers(1, 4)), replace=False)]
    colours = [str(c) for c in rng.choice(list(COLOURS), size=int(rng.integers(2, 4)), replace=False)]
    motions, weights = list(MOTION_WEIGHTS), np.array(list(MOTION_WEIGHTS.values()))
    out = []
    for _ in range(n):
        kind, motion = str(rng.choice(kinds)), str(rng.choice(motions, p=weights / weights.sum()))
        if kind == "circle" and motion == "rotate":
            motion = "still"
        size = "changing" if motion in ("grow", "shrink") else ("big" if rng.random() < 0.45 else "small")
        out.append((kind, str(rng.choice(colours)), size, motion))
    kind, colour = str(rng.choice(kinds)), str(rng.choice(colours))
    if rng.random() < TWIN_GROWTH_PROB:
        group = [(kind, colour, "changing", m) for m in ("grow", "shrink")]
    else:
        k = 3 if n >= 3 and rng.random() < TWIN_TRIPLE_PROB else 2
        allowed = [m for m in CONSTANT_SIZE_MOTIONS if not (kind == "circle" and m == "rotate")]
        size = "big" if rng.random() < 0.45 else "small"
        group = [(kind, colour, size, str(m)) for m in rng.choice(allowed, size=k, replace=False)]
    out[: len(group)] = group
    order = rng.permutation(n)  # twins are not always painted first
    return [out[i] for i in order]


def sample_tracks(rng: np.random.Generator, num_frames: int, height: int, width: int, n_objects: int
                  ) -> list[Track]:  # fmt: skip
    """Place up to `n_objects` moving objects (fewer when some find no room), with limited occlusion.

    Candidates are rejected when their centres come too close to an earlier object's in some frame (or, for
    the objects allowed to overlap, when an earlier object would keep less than `MIN_VISIBLE` of its area).
    """
    scale = min(height, width)
    tracks: list[Track] = []
    for kind, colour, size, motion in _appearances(rng, n_objects):
        outline, hole, angle0 = _outline(kind, rng)
        spin = float(rng.uniform(*SPIN)) * float(rng.choice([-1.0, 1.0])) if motion == "rotate" else 0.0
        angle = angle0 + spin * np.arange(num_frames)
        allow_overlap = rng.random() < OVERLAP_PROB
        for _ in range(60):
            r = _radii(rng, size, motion, num_frames, scale)
            path = _path(rng, motion, r, height, width)
            if path is None:
                continue
            cx, cy = path
            gaps = [np.min(np.hypot(cx - o.cx, cy - o.cy) / (r + o.r)) for o in tracks]
            if gaps and min(gaps) < (0.55 if allow_overlap else 1.08):
                continue
            full = _silhouettes(outline, hole, cx, cy, r, angle, height, width)
            if not full.any(axis=(1, 2)).all():
                continue
            kept = [(o.visible & ~full).sum(axis=(1, 2)) for o in tracks]
            if any((k < MIN_VISIBLE * o.full.sum(axis=(1, 2))).any() for k, o in zip(kept, tracks)):
                continue
            for o in tracks:
                o.visible = o.visible & ~full
            tracks.append(Track(kind, colour, size, motion, cx, cy, r, angle, outline, hole, full, full.copy()))
            break
    return tracks


# ---------------------------------------------------------------------------------------------------------
# rendering


def render_video(rng: np.random.Generator, tracks: list[Track], height: int, width: int
                 ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Frames TxHxWx3 uint8 and label maps TxHxW uint8 (0 background, i + 1 where track i is visible).

    Each object keeps one hue jitter and one shading direction for the whole video (a rotating object's
    shading turns with it), so that an object looks the same in every frame.
    """
    num_frames = len(tracks[0].cx)
    background = _background(rng, height, width)
    looks = [
        (np.array(COLOURS[tr.colour], np.float32) + rng.uniform(-14, 14, 3).astype(np.float32),
         float(rng.uniform(0, 2 * np.pi)))
        for tr in tracks
    ]  # fmt: skip
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    labels = np.zeros((num_frames, height, width), np.uint8)
    for t in range(num_frames):
        img = background + FRAME_NOISE * rng.standard_normal((height, width, 1), dtype=np.float32)
        for i, (tr, (base, phi)) in enumerate(zip(tracks, looks)):
            ys, xs = np.nonzero(tr.full[t])
            a = phi + float(tr.angle[t])
            ramp = ((xs - tr.cx[t]) * math.cos(a) + (ys - tr.cy[t]) * math.sin(a)) / tr.r[t]  # about -1..1
            shade = (1.0 + 0.12 * ramp)[:, None].astype(np.float32)
            img[ys, xs] = base[None] * shade + rng.normal(0, 5, (len(ys), 1)).astype(np.float32)
            labels[t][tr.visible[t]] = i + 1
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames, labels
