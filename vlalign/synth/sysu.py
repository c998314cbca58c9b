"""Synthetic SYSU-MM01 in the exact release layout, and the person renderer shared with `synth.regdb`.

    DIR/cam{1..6}/{pid:04d}/{img:04d}.jpg      128x64 crops; cams 1, 2, 4, 5 visible, 3, 6 near-infrared
    DIR/exp/train_id.txt, val_id.txt, test_id.txt, available_id.txt   one comma-separated line each
    DIR/exp/rand_perm_cam.mat                  official-structure gallery permutations (when SciPy is present)
    DIR/dataset.json, DIR/README.txt           counts and parameters; what this is

Identities have a body (height, shoulders, hips, head), skin, hair (short/long), an upper garment (colour,
second colour, pattern, sleeves), a lower garment (trousers, shorts, skirt), shoes and maybe a bag, each
garment of a *material*. Visible cameras see colours under their own cast, illumination and background.
Near-infrared cameras lose colour: a garment's intensity comes from its material (drawn per identity,
independent of its colour), with the illuminator's falloff, blur and noise; IR crops are stored as 3-channel
JPEGs with R = G = B, as the real release stores its IR images (maintainer, wuancong/SYSU-MM01 issue #3).
Every image has its own generator `numpy.random.default_rng([seed, tag, pid, cam, k])`: same seed, same bytes.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DEFAULT_NUM_IDS = 300
DEFAULT_SEED = 0
H, W = 128, 64
# region codes of the label map; UPPER2 holds the upper garment's pattern (its second colour)
BG, SKIN, HAIR, UPPER, LOWER, SHOES, BAG, UPPER2 = range(8)
# material -> (near-infrared reflectance range, thermal intensity range); many dyes are transparent in NIR,
# so cotton is bright whatever its colour while black synthetics and leather absorb.
MATERIALS = {
    "cotton": ((0.60, 0.85), (0.55, 0.70)),
    "denim": ((0.35, 0.55), (0.50, 0.62)),
    "synthetic": ((0.12, 0.45), (0.60, 0.75)),
    "wool": ((0.45, 0.70), (0.35, 0.50)),
    "leather": ((0.08, 0.25), (0.30, 0.45)),
}


def _hex(codes: str) -> np.ndarray:
    """(N, 3) float32 RGB from space-separated hex codes."""
    return np.array([[int(c[i : i + 2], 16) for i in (0, 2, 4)] for c in codes.split()], np.float32)


PALETTE = _hex(  # black, white, grey, navy, red, maroon, green, olive, blue, sky, yellow, orange, pink, ...
    "141416 ebebe6 808080 1e285a c81e23 6e1923 287832 6e6e28 285ac8 82bee6 ebc828 f0821e e68caa 6e328c 6e4628 d7c3a0"
)
SKINS = _hex("f0c8aa dcaf8c be8c64 966446 644632")
HAIRS = _hex("140f0a 3c2819 6e5032 c8aa6e 969696")
PATTERNS = ("plain", "plain", "hstripe", "vstripe", "check", "twotone", "logo")


@dataclass(frozen=True)
class Garment:
    rgb: np.ndarray  # (3,) float, 0..255
    rgb2: np.ndarray  # second colour of the pattern
    pattern: str
    period: int  # stripe / check period, px
    material: str
    nir: float  # near-infrared intensity in [0, 1], from the material
    thermal: float


@dataclass(frozen=True)
class Person:
    gender: str
    height: float  # share of the crop height
    shoulder: float  # half-widths and head radius in percent of the body height
    hip: float
    head: float
    skin: np.ndarray
    hair: np.ndarray
    long_hair: bool
    upper: Garment
    short_sleeves: bool
    lower: Garment
    lower_kind: str  # trousers / shorts / skirt
    shoes: np.ndarray
    bag_kind: str  # none / backpack / shoulder / hand
    bag: Garment


def _garment(rng: np.random.Generator, materials: tuple[str, ...]) -> Garment:
    material = str(rng.choice(materials))
    (n0, n1), (t0, t1) = MATERIALS[material]
    c1, c2 = rng.choice(len(PALETTE), 2, replace=False)
    rgb, pattern = np.clip(PALETTE[c1] + rng.normal(0, 12, 3), 0, 255), str(rng.choice(PATTERNS))
    nir, thermal = float(rng.uniform(n0, n1)), float(rng.uniform(t0, t1))
    return Garment(rgb, PALETTE[c2], pattern, int(rng.integers(3, 7)), material, nir, thermal)


def sample_person(rng: np.random.Generator) -> Person:
    """One identity's appearance; every draw comes from `rng`."""
    female = bool(rng.random() < 0.5)
    kinds = ("trousers", "trousers", "shorts", "skirt") if female else ("trousers", "trousers", "trousers", "shorts")
    lower_kind = str(rng.choice(kinds))
    lower = _garment(rng, ("denim", "cotton", "synthetic", "wool"))
    return Person(
        gender="female" if female else "male",
        height=float(rng.uniform(0.78, 0.93)),
        shoulder=float(rng.uniform(9.5, 11.5) if female else rng.uniform(11.0, 13.5)),
        hip=float(rng.uniform(8.5, 10.5)),
        head=float(rng.uniform(6.0, 7.2)),
        skin=SKINS[rng.integers(len(SKINS))],
        hair=HAIRS[rng.integers(len(HAIRS))],
        long_hair=bool(rng.random() < (0.7 if female else 0.1)),
        upper=_garment(rng, tuple(MATERIALS)),
        short_sleeves=bool(rng.random() < 0.4),
        lower=replace(lower, pattern="plain"),  # the label map has no pattern code for the lower garment
        lower_kind=lower_kind,
        shoes=PALETTE[rng.integers(len(PALETTE))] * 0.6,
        bag_kind=str(rng.choice(["none", "none", "backpack", "shoulder", "hand"])),
        bag=_garment(rng, ("leather", "synthetic", "cotton")),
    )


def draw_labels(person: Person, rng: np.random.Generator, view: str) -> np.ndarray:
    """HxW uint8 label map of one pose (position, scale, stride, arm swing, mirror) seen from `view`."""
    img = Image.new("L", (W, H), BG)
    d = ImageDraw.Draw(img)
    u = person.height * H * rng.uniform(0.94, 1.04) / 100  # px per percent of body height
    top = (H - 100 * u) / 2 + rng.uniform(-3, 3)
    cx = W / 2 + rng.uniform(-4, 4)
    y = lambda t: top + t * u  # noqa: E731
    side = view == "side"
    sw, hw = person.shoulder * u * (0.6 if side else 1), person.hip * u * (0.7 if side else 1)
    r, stride, swing = person.head * u, rng.uniform(0, 5) * u * (1.6 if side else 0.4), rng.uniform(-2, 2) * u

    def leg(sign: float, end: float) -> list[tuple[float, float]]:
        lean = sign * stride * (end - 50) / 46  # legs part linearly from the hips
        inner, outer = cx + sign * 0.5 * u, cx + sign * hw
        return [(outer, y(50)), (inner, y(50)), (inner + lean + sign * u, y(end)), (outer + lean - sign * u, y(end))]

    if person.bag_kind == "backpack" and view != "back":  # seen behind the body
        d.rectangle([cx - sw * 0.8 + (3 * u if side else 0), y(18), cx + sw * 0.8 + (5 * u if side else 0), y(45)], BAG)
    for sign in (-1, 1):
        d.polygon(leg(sign, 96), SKIN if person.lower_kind != "trousers" else LOWER)
        if person.lower_kind == "shorts":
            d.polygon(leg(sign, 68), LOWER)
        x_ankle = leg(sign, 96)[2][0]
        d.ellipse([x_ankle - 3.5 * u + sign * 2 * u, y(95), x_ankle + 3.5 * u + sign * 2 * u, y(100)], SHOES)
    if person.lower_kind == "skirt":
        d.polygon([(cx - hw, y(48)), (cx + hw, y(48)), (cx + hw * 1.4, y(76)), (cx - hw * 1.4, y(76))], LOWER)
    else:
        d.rectangle([cx - hw, y(47), cx + hw, y(56)], LOWER)
    d.rectangle([cx - 0.4 * r, y(2 * person.head - 1), cx + 0.4 * r, y(17)], SKIN)  # neck
    d.polygon([(cx - sw, y(16)), (cx + sw, y(16)), (cx + hw, y(51)), (cx - hw, y(51))], UPPER)
    for sign in (1,) if side else (-1, 1):
        x0 = cx + sign * (sw - (4 * u if side else 0))
        arm = [(x0, y(17)), (x0 + sign * 4 * u, y(17)), (x0 + sign * 4 * u + swing, y(50)), (x0 + swing, y(50))]
        d.polygon(arm, SKIN if person.short_sleeves else UPPER)
        if person.short_sleeves:
            d.polygon(arm[:2] + [(x0 + sign * 4 * u + swing * 0.4, y(31)), (x0 + swing * 0.4, y(31))], UPPER)
        hx = x0 + swing + sign * 2 * u
        d.ellipse([hx - 2.2 * u, y(49), hx + 2.2 * u, y(55)], SKIN)
        if person.bag_kind == "hand" and sign == 1:
            d.rectangle([hx - 4 * u, y(52), hx + 4 * u, y(64)], BAG)
    if person.long_hair and view != "back":
        d.rectangle([cx - r, y(person.head), cx + r, y(24)], HAIR)
    d.ellipse([cx - 0.85 * r, top, cx + 0.85 * r, top + 2 * r], HAIR if view == "back" else SKIN)
    if view != "back":
        d.chord([cx - 0.9 * r, top - 0.3 * u, cx + 0.9 * r, top + 1.3 * r], 180, 360, HAIR)
    elif person.long_hair:
        d.rectangle([cx - r, y(person.head), cx + r, y(26)], HAIR)
    if person.bag_kind == "backpack" and view == "back":
        d.rectangle([cx - sw * 0.8, y(18), cx + sw * 0.8, y(45)], BAG)
    elif person.bag_kind == "backpack":
        for sign in (1,) if side else (-1, 1):
            d.line([(cx + sign * sw * 0.6, y(16)), (cx + sign * sw * 0.6, y(38))], BAG, width=max(1, round(1.5 * u)))
    elif person.bag_kind == "shoulder":
        d.line([(cx - sw * 0.7, y(16)), (cx + hw, y(46))], BAG, width=max(1, round(1.2 * u)))
        d.rectangle([cx + hw - 2 * u, y(42), cx + hw + 6 * u, y(56)], BAG)
    labels = np.asarray(img).copy()
    _pattern(labels, person.upper, view, cx, y(16), y(51), u)
    return labels[:, ::-1].copy() if rng.random() < 0.5 else labels


def _pattern(labels: np.ndarray, g: Garment, view: str, cx: float, y0: float, y1: float, u: float) -> None:
    """Mark the upper garment's second colour (UPPER2) in place: stripes, checks, two tones or a chest logo."""
    ys, xs = np.nonzero(labels == UPPER)
    if g.pattern == "plain" or len(ys) == 0 or (g.pattern == "logo" and view != "front"):
        return
    hs, vs = ((ys - y0) // g.period) % 2 == 1, ((xs - cx) // g.period) % 2 == 1
    alt = {
        "hstripe": hs,
        "vstripe": vs,
        "check": hs ^ vs,
        "twotone": ys > (y0 + y1) / 2,
        "logo": (np.abs(xs - cx) < 3.5 * u) & (ys > y0 + 5 * u) & (ys < y0 + 13 * u),
    }[g.pattern]
    labels[ys[alt], xs[alt]] = UPPER2


@dataclass(frozen=True)
class Camera:
    modality: str  # visible / nir / thermal
    top: tuple  # background above the horizon: RGB (visible) or intensity (IR)
    bottom: tuple
    horizon: tuple[float, float]
    texture: float
    cast: tuple[float, float, float]  # colour cast (visible)
    gain: tuple[float, float]
    blur: float
    noise: float
    bars: bool = False


SYSU_CAMERAS = {  # 1, 2 indoor (Kinect); 4 gate, 5 garden; 3 indoor NIR (room of cam 2), 6 outdoor NIR
    1: Camera("visible", (200, 185, 160), (120, 95, 70), (0.70, 0.82), 0.10, (1.08, 1.0, 0.85), (0.65, 1.0), 0.5, 3),
    2: Camera("visible", (215, 220, 225), (140, 140, 145), (0.72, 0.85), 0.06, (0.92, 1.0, 1.10), (0.8, 1.1), 0.5, 3),
    3: Camera("nir", (0.22,), (0.32,), (0.70, 0.85), 0.08, (1, 1, 1), (0.8, 1.1), 0.9, 5),
    4: Camera("visible", (150, 150, 145), (110, 108, 100), (0.55, 0.75), 0.15, (1, 1, 1), (0.9, 1.3), 0.4, 2, True),
    5: Camera("visible", (70, 120, 60), (150, 140, 120), (0.55, 0.70), 0.25, (0.95, 1.05, 0.92), (0.6, 1.2), 0.5, 3),
    6: Camera("nir", (0.65,), (0.3,), (0.55, 0.70), 0.20, (1, 1, 1), (0.75, 1.05), 1.2, 7),  # foliage: NIR-bright
}


def _smooth(rng: np.random.Generator, cells: tuple[int, int]) -> np.ndarray:
    """HxW float texture in [-1, 1]: a coarse random grid, bilinearly upsampled."""
    grid = Image.fromarray((rng.random(cells) * 255).astype(np.uint8))
    return np.asarray(grid.resize((W, H), Image.BILINEAR), dtype=np.float32) / 127.5 - 1


def render(person: Person, labels: np.ndarray, camera: Camera, rng: np.random.Generator) -> np.ndarray:
    """HxWx3 uint8 image of a label map through `camera` (IR images have R = G = B)."""
    visible = camera.modality == "visible"
    channels = 3 if visible else 1
    horizon = int(H * rng.uniform(*camera.horizon))
    bg = np.empty((H, W, channels), np.float32)
    bg[:horizon], bg[horizon:] = camera.top, camera.bottom
    scale = 255.0 if visible else 1.0
    bg += (camera.texture * scale) * _smooth(rng, (8, 4))[..., None]
    if camera.bars:  # railings of the gate camera
        bg[:horizon, int(rng.integers(0, 6)) :: 7] *= 0.55
    if visible:
        lut = np.stack(
            [
                np.zeros(3),
                person.skin,
                person.hair,
                person.upper.rgb,
                person.lower.rgb,
                person.shoes,
                person.bag.rgb,
                person.upper.rgb2,
            ]
        ).astype(np.float32)
        curve = 0.3
    else:
        key = camera.modality
        skin, shoes = (0.55, 0.2) if key == "nir" else (0.92, 0.4)  # skin is the warmest surface in thermal
        hair = 0.15 + 0.003 * float(person.hair.mean()) if key == "nir" else 0.6
        up, low, bag = (getattr(g, key) for g in (person.upper, person.lower, person.bag))
        # NIR: dyes of one fabric differ a little, so patterns stay faintly visible; thermal: not at all
        alt = up + (0.06 if key == "nir" else 0.0)
        lut = np.array([0, skin, hair, up, low, shoes, bag, alt], np.float32)[:, None]
        curve = 0.15 if key == "nir" else 0.05
    body = labels > BG
    xs = np.arange(W, dtype=np.float32) - W / 2
    shade = 1 - curve * np.clip((xs / 14) ** 2, 0, 1)[None, :, None]  # round bodies darken at their edges
    fabric = rng.normal(1, 0.03, (H, W, 1)).astype(np.float32)
    img = np.where(body[..., None], lut[labels] * shade * fabric, bg)
    if visible:
        img = img * np.asarray(camera.cast, np.float32) * rng.uniform(*camera.gain)
        img = 255 * (np.clip(img, 0, 255) / 255) ** rng.uniform(0.85, 1.15)
    else:  # an active illuminator lights the centre most; the sensor maps intensity to grey levels
        ys = (np.arange(H, dtype=np.float32) / H - 0.5)[:, None]
        falloff = 1 - 0.35 * (ys**2 + (xs[None, :] / W) ** 2) * (camera.modality == "nir")
        img = 255 * img * rng.uniform(*camera.gain) * falloff[..., None]
    img = np.clip(img + rng.normal(0, camera.noise, img.shape), 0, 255).astype(np.uint8)
    pil = Image.fromarray(img if visible else img[..., 0])
    pil = pil.filter(ImageFilter.GaussianBlur(camera.blur * rng.uniform(0.8, 1.2)))
    return np.asarray(pil.convert("RGB"))


def _write_mat(path: Path, cells: list[list[np.ndarray]]) -> bool:
    """rand_perm_cam.mat in the official structure (6x1 cell of 1xN cells of 10xn matrices); False without
    SciPy. The header's creation time is replaced by a fixed text, so the same seed gives the same bytes."""
    try:
        from scipy.io import savemat
    except ImportError:
        return False
    top = np.empty((6, 1), dtype=object)
    for c, per_id in enumerate(cells):
        row = np.empty((1, len(per_id)), dtype=object)
        for i, matrix in enumerate(per_id):
            row[0, i] = matrix
        top[c, 0] = row
    buffer = io.BytesIO()
    savemat(buffer, {"rand_perm_cam": top})
    data = bytearray(buffer.getvalue())
    data[:116] = b"MATLAB 5.0 MAT-file, written by vlalign synth sysu".ljust(116)
    path.write_bytes(bytes(data))
    return True


def split_ids(num_ids: int, seed: int) -> dict[str, np.ndarray]:
    """The identities (1-based) of each split: 20% test, 20% val, the rest train, shuffled by `seed`."""
    order = np.random.default_rng([seed, 1]).permutation(np.arange(1, num_ids + 1))
    n_test = n_val = max(1, round(0.2 * num_ids))  # the release: 296 / 99 / 96 of 491 identities
    return {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}


def person_of(pid: int, seed: int) -> Person:
    """The appearance of identity `pid` in the set generated with `seed` (what its images are drawn from)."""
    return _identity(pid, seed)[0]


def _identity(pid: int, seed: int) -> tuple[Person, np.random.Generator]:
    """Identity `pid`'s appearance and its generator, which goes on to draw the identity's cameras."""
    rng = np.random.default_rng([seed, 2, pid])
    return sample_person(rng), rng


def generate_sysu(out_dir: str | Path, num_ids: int = DEFAULT_NUM_IDS, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """Write the synthetic SYSU-MM01 to `out_dir`; return its summary (also written as dataset.json)."""
    if num_ids < 3:
        raise ValueError(f"num_ids must be >= 3 (one identity per train / val / test split), got {num_ids}")
    out = Path(out_dir)
    (out / "exp").mkdir(parents=True, exist_ok=True)
    pids = np.arange(1, num_ids + 1)
    splits = split_ids(num_ids, seed)
    for name, ids in {**splits, "available": pids}.items():
        (out / "exp" / f"{name}_id.txt").write_text(",".join(str(i) for i in sorted(ids.tolist())))
    counts = {c: 0 for c in SYSU_CAMERAS}
    perms: list[list[np.ndarray]] = [[] for _ in SYSU_CAMERAS]
    for pid in pids.tolist():
        person, rng = _identity(pid, seed)
        # each identity walks past a subset of the cameras: >= 2 visible and >= 1 infrared
        vis = [c for c in (1, 2, 4, 5) if rng.random() < 0.75]
        vis = vis if len(vis) >= 2 else rng.choice([1, 2, 4, 5], 2, replace=False).tolist()
        ir = [c for c in (3, 6) if rng.random() < 0.75] or [int(rng.choice([3, 6]))]
        for cam in sorted(SYSU_CAMERAS):
            n = int(rng.integers(10, 14)) if cam in vis else int(rng.integers(8, 12)) if cam in ir else 0
            prng = np.random.default_rng([seed, 3, cam, pid])
            perms[cam - 1].append(
                np.stack([prng.permutation(n) + 1 for _ in range(10)]).astype(np.float64) if n else np.zeros((0, 0))
            )
            if n:
                folder = out / f"cam{cam}" / f"{pid:04d}"
                folder.mkdir(parents=True, exist_ok=True)
            for k in range(1, n + 1):
                irng = np.random.default_rng([seed, 4, pid, cam, k])
                labels = draw_labels(person, irng, str(irng.choice(["front", "back", "side"])))
                Image.fromarray(render(person, labels, SYSU_CAMERAS[cam], irng)).save(
                    folder / f"{k:04d}.jpg", quality=90
                )
            counts[cam] += n
    for cam in SYSU_CAMERAS:
        (out / f"cam{cam}").mkdir(exist_ok=True)  # the release has all six folders
    wrote_mat = _write_mat(out / "exp" / "rand_perm_cam.mat", perms)
    summary = {
        "out_dir": str(out),
        "seed": seed,
        "num_ids": num_ids,
        "image_size": [H, W],
        "ids": {k: len(v) for k, v in splits.items()},
        "images_per_cam": {f"cam{c}": n for c, n in counts.items()},
        "rand_perm_cam": wrote_mat,
    }
    with open(out / "dataset.json", "w") as f:  # without out_dir: same seed, same bytes, wherever written
        json.dump({k: v for k, v in summary.items() if k != "out_dir"}, f, indent=2)
    (out / "README.txt").write_text(_README.format(num_ids=num_ids, seed=seed))
    return summary


_README = """vlalign synthetic SYSU-MM01 (release layout), from `vlalign synth sysu --num-ids {num_ids} --seed {seed}`.
cam1, cam2, cam4, cam5: visible; cam3, cam6: near-infrared (3-channel JPEG, R = G = B). exp/*_id.txt list the
identities of each split; exp/rand_perm_cam.mat holds gallery permutations in the official structure (10 trials).
This data is synthetic: numbers measured on it say nothing about SYSU-MM01 itself.
"""
