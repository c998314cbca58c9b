"""Synthetic scenes: coloured shapes on textured backgrounds, with exact masks.

A scene is a list of `SceneObject`s painted in order (later objects occlude earlier ones). Every outline is a
polygon that pycocotools rasterises, so the mask written to the annotation file is exactly the set of pixels
painted with the object's colour. Geometry lives in image pixels: x to the right, y downwards.

The attribute vocabulary (kinds, their groups, colours, size classes) is defined here; the words used to
talk about them live in `vlalign.synth.expressions`.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils

# Two groups of kinds play the role of RefCOCO's "people" (testA) vs "other objects" (testB).
GROUPS: dict[str, tuple[str, ...]] = {
    "round": ("circle", "oval", "ring", "heart", "crescent"),
    "angular": ("square", "triangle", "star", "hexagon", "cross"),
}
KINDS: tuple[str, ...] = GROUPS["round"] + GROUPS["angular"]
GROUP_OF: dict[str, str] = {kind: group for group, kinds in GROUPS.items() for kind in kinds}

# Saturated, well separated hues; backgrounds are kept desaturated so no background reads as a colour word.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 34, 34),
    "orange": (246, 134, 18),
    "yellow": (236, 214, 28),
    "green": (34, 164, 58),
    "blue": (36, 78, 222),
    "purple": (138, 46, 188),
}

# Size classes as a fraction of min(H, W) of the object's radius; the gap (x1.6) keeps "small" vs "big"
# visible across kinds even after occlusion.
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.065, 0.082), "big": (0.125, 0.15)}

MIN_VISIBLE = 0.6  # an occluded object keeps at least this share of its area, so its kind stays readable


@dataclass
class SceneObject:
    """One shape. `full` is the whole silhouette, `visible` what remains after later objects are painted."""

    kind: str
    colour: str
    size: str
    cx: float
    cy: float
    r: float
    angle: float
    polygons: list[list[float]]  # COCO polygons [x0, y0, x1, y1, ...] of the full silhouette
    hole: list[float] | None  # inner outline of a ring (COCO polygons cannot carry holes)
    full: np.ndarray = field(repr=False)  # bool HxW
    visible: np.ndarray = field(repr=False)  # bool HxW

    @property
    def group(self) -> str:
        return GROUP_OF[self.kind]

    @property
    def occluded(self) -> bool:
        return bool((self.full & ~self.visible).any())

    def pixels(self, which: str = "full") -> tuple[np.ndarray, np.ndarray]:
        """(ys, xs) of the full or visible mask, searched only inside the outline's box (much cheaper)."""
        xy = np.asarray(self.polygons[0]).reshape(-1, 2)
        x0, y0 = np.floor(xy.min(0)).astype(int).clip(0)
        x1, y1 = np.ceil(xy.max(0)).astype(int) + 2
        ys, xs = np.nonzero(getattr(self, which)[y0:y1, x0:x1])
        return ys + y0, xs + x0


@dataclass
class Scene:
    height: int
    width: int
    objects: list[SceneObject]

    @property
    def scale(self) -> float:
        """The length that relative thresholds (margins, sizes) are fractions of."""
        return float(min(self.height, self.width))


# ---------------------------------------------------------------------------------------------------------
# outlines: unit shapes (radius ~1, centred at 0), then rotated, scaled and moved


def _circle_pts(n: int = 48, rx: float = 1.0, ry: float = 1.0) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([rx * np.cos(t), ry * np.sin(t)], axis=1)


def _regular(n: int, radius: float, phase: float) -> np.ndarray:
    t = phase + np.arange(n) * 2 * np.pi / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _star() -> np.ndarray:
    outer, inner = _regular(5, 1.1, -np.pi / 2), _regular(5, 0.46, -np.pi / 2 + np.pi / 5)
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


def _cross() -> np.ndarray:
    a, b = 0.95, 0.32  # arm length and half width
    arm = np.array([[-b, -a], [b, -a], [b, -b]])  # the top arm and the inner corner after it
    quarter = np.array([[0.0, 1.0], [-1.0, 0.0]])  # 90° clockwise (y down)
    return np.concatenate([arm @ np.linalg.matrix_power(quarter, i) for i in range(4)])


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))  # y down: lobes on top
    return np.stack([x, y + 2.5], axis=1) / 16.0


def _crescent() -> np.ndarray:
    # Outer unit disc minus a disc of radius ri shifted by d: outer arc outside the inner disc, then the inner
    # arc that lies inside the outer disc, traversed back to the start.
    d, ri = 0.45, 0.8
    t0 = math.acos((1 + d * d - ri * ri) / (2 * d))
    s0 = math.atan2(math.sin(t0), math.cos(t0) - d)
    outer = np.linspace(t0, 2 * np.pi - t0, 36)
    inner = np.linspace(2 * np.pi - s0, s0, 24)[1:-1]
    pts_o = np.stack([np.cos(outer), np.sin(outer)], axis=1)
    pts_i = np.stack([d + ri * np.cos(inner), ri * np.sin(inner)], axis=1)
    return np.concatenate([pts_o, pts_i]) + np.array([0.2, 0.0])  # recentre the visible body


def _outline(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Unit outline, optional unit hole, and a rotation (radians) that keeps the kind recognisable."""
    tilt = float(rng.uniform(-0.3, 0.3))  # squares/crosses/hearts stay upright-ish: a 45° square is a diamond
    free = float(rng.uniform(0, 2 * np.pi))
    if kind == "circle":
        return _circle_pts(), None, 0.0
    if kind == "oval":
        return _circle_pts(rx=1.05, ry=0.62), None, free
    if kind == "ring":
        return _circle_pts(), _circle_pts(rx=0.58, ry=0.58), 0.0
    if kind == "heart":
        return _heart(), None, tilt
    if kind == "crescent":
        return _crescent(), None, free
    if kind == "square":
        return _regular(4, 1.0, np.pi / 4) * 0.92, None, tilt
    if kind == "triangle":
        return _regular(3, 1.12, -np.pi / 2) + np.array([0, 0.2]), None, tilt
    if kind == "star":
        return _star(), None, free
    if kind == "hexagon":
        return _regular(6, 1.0, 0.0), None, free
    if kind == "cross":
        return _cross(), None, tilt
    raise ValueError(f"unknown shape kind {kind!r}; expected one of {KINDS}")


def _place(pts: np.ndarray, cx: float, cy: float, r: float, angle: float) -> list[float]:
    c, s = math.cos(angle), math.sin(angle)
    rot = pts @ np.array([[c, s], [-s, c]])
    xy = rot * r + np.array([cx, cy])
    # rounded so that the polygon written to JSON rasterises to exactly the mask used for painting
    return [round(float(v), 2) for v in xy.reshape(-1)]


def polygon_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons (pycocotools, as every refer reader does) to a bool HxW mask."""
    rles = mask_utils.frPyObjects(polygons, height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


# ---------------------------------------------------------------------------------------------------------
# layout


def _choose_attributes(rng: np.random.Generator, n: int, focus: str | None) -> list[tuple[str, str, str]]:
    """(kind, colour, size) per object, drawn from a small palette so that objects share attributes.

    Few kinds and few colours per image make same-kind and same-colour distractors the rule, so a single
    attribute rarely singles out the target. With a `focus` group most objects are of that group (the targets
    of testA/testB come from it), with an occasional kind of the other group as a distractor.
    """
    if focus is None:
        pool = list(KINDS)
        n_kinds = int(rng.integers(1, 4))
        kinds = [str(k) for k in rng.choice(pool, size=n_kinds, replace=False)]
        weights = np.full(n_kinds, 1.0 / n_kinds)
    else:
        own = list(GROUPS[focus])
        other = [k for k in KINDS if k not in own]
        n_kinds = int(rng.integers(1, 3))
        kinds = [str(k) for k in rng.choice(own, size=n_kinds, replace=False)]
        weights = np.full(n_kinds, 1.0 / n_kinds)
        if rng.random() < 0.5:
            kinds.append(str(rng.choice(other)))
            weights = np.append(weights * 0.75, 0.25)
    colours = [str(c) for c in rng.choice(list(COLOURS), size=int(rng.integers(2, 4)), replace=False)]
    out = []
    for _ in range(n):
        kind = kinds[int(rng.choice(len(kinds), p=weights))]
        out.append((kind, str(rng.choice(colours)), "big" if rng.random() < 0.45 else "small"))
    if focus is not None and not any(GROUP_OF[k] == focus for k, _, _ in out):
        out[0] = (kinds[0], out[0][1], out[0][2])
    return out


def sample_scene(
    rng: np.random.Generator, height: int, width: int, n_objects: int, focus: str | None = None
) -> Scene:
    """Place up to `n_objects` shapes (fewer when the canvas is full) with limited occlusion.

    About a third of the objects may overlap an earlier one; each earlier object must keep `MIN_VISIBLE` of
    its area, which keeps the occluded (RLE) annotations recognisable.
    """
    scale = min(height, width)
    objects: list[SceneObject] = []
    for kind, colour, size in _choose_attributes(rng, n_objects, focus):
        pts, hole_pts, angle = _outline(kind, rng)
        allow_overlap = rng.random() < 0.35
        for _ in range(60):
            r = float(rng.uniform(*SIZE_RANGES[size])) * scale
            pad = 1.2 * r + 2
            cx, cy = float(rng.uniform(pad, width - pad)), float(rng.uniform(pad, height - pad))
            gaps = [math.hypot(cx - o.cx, cy - o.cy) / (r + o.r) for o in objects]
            if gaps and min(gaps) < (0.55 if allow_overlap else 1.08):
                continue
            polygons = [_place(pts, cx, cy, r, angle)]
            hole = _place(hole_pts, cx, cy, r, angle) if hole_pts is not None else None
            full = polygon_mask(polygons, height, width)
            if hole is not None:
                full &= ~polygon_mask([hole], height, width)
            if not full.any():
                continue
            hidden = [o for o in objects if (o.visible & full).any()]
            if any((o.visible & ~full).sum() < MIN_VISIBLE * o.full.sum() for o in hidden):
                continue
            for o in objects:
                o.visible = o.visible & ~full
            obj = SceneObject(kind, colour, size, cx, cy, r, angle, polygons, hole, full, full.copy())
            objects.append(obj)
            break
    return Scene(height, width, objects)


# ---------------------------------------------------------------------------------------------------------
# rendering


def _muted(rng: np.random.Generator) -> np.ndarray:
    h, s, v = rng.random(), rng.uniform(0.0, 0.28), rng.uniform(0.28, 0.85)
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32) * 255


def _interp_matrix(n_out: int, cells: int) -> np.ndarray:
    """(n_out, cells+1) weights of linear interpolation from a grid of cells+1 knots to n_out samples."""
    pos = np.linspace(0, cells, n_out)
    i0 = np.minimum(pos.astype(int), cells - 1)
    frac = (pos - i0).astype(np.float32)
    m = np.zeros((n_out, cells + 1), np.float32)
    m[np.arange(n_out), i0] = 1 - frac
    m[np.arange(n_out), i0 + 1] = frac
    return m


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid, bilinearly upsampled (HxW)."""
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    rows = (_interp_matrix(height, cells)[:, :, None] * grid[None]).sum(1)  # (H, cells+1)
    cols = _interp_matrix(width, cells)  # (W, cells+1)
    # a sum of outer products rather than a matmul: BLAS would start threads for this tiny product
    return sum(rows[:, k, None] * cols[None, :, k] for k in range(cells + 1))


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """HxWx3 float background: a gradient, stripes, blotches or a checkerboard between two muted colours."""
    a, b = _muted(rng), _muted(rng)
    yy, xx = np.ogrid[0:height, 0:width]  # broadcast (H, 1) and (1, W) instead of two HxW grids
    theta = rng.uniform(0, np.pi)
    along = ((xx * math.cos(theta) + yy * math.sin(theta)) / max(height, width)).astype(np.float32)
    style = rng.choice(["gradient", "stripes", "blotches", "checker"])
    if style == "gradient":
        t = (along - along.min()) / max(float(np.ptp(along)), 1e-6)
    elif style == "stripes":
        period = rng.uniform(0.04, 0.15)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * along / period)
        if rng.random() < 0.5:  # hard-edged stripes
            t = (t > 0.5).astype(np.float32)
    elif style == "blotches":
        t = _smooth_noise(rng, height, width, int(rng.integers(3, 9)))
    else:
        cell = int(rng.integers(14, 48))
        t = (((xx // cell) + (yy // cell)) % 2).astype(np.float32)
    img = a[None, None] + (b - a)[None, None] * t[..., None]
    grain = rng.uniform(3, 12) * rng.standard_normal(
        (height, width, 1), dtype=np.float32
    )  # grey, in px units
    return img + grain


def render(rng: np.random.Generator, scene: Scene) -> np.ndarray:
    """Paint the scene: HxWx3 uint8. Each object gets its hue with jitter, a shading ramp and grain.

    Objects are painted over the background in scene order; the background carries its own grain.
    """
    img = _background(rng, scene.height, scene.width)
    for obj in scene.objects:
        ys, xs = obj.pixels("full")  # only the object's pixels: cheaper than full-image arrays
        base = np.array(COLOURS[obj.colour], np.float32) + rng.uniform(-14, 14, 3).astype(np.float32)
        phi = rng.uniform(0, 2 * np.pi)
        ramp = ((xs - obj.cx) * math.cos(phi) + (ys - obj.cy) * math.sin(phi)) / obj.r  # about -1..1
        shade = (1.0 + 0.12 * ramp)[:, None].astype(np.float32)
        img[ys, xs] = base[None] * shade + rng.normal(0, 5, (len(ys), 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)
