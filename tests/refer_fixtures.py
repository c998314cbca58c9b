"""Tiny refer-format datasets (RefCOCO layout) written on the fly, for any test that needs referring data.

`write_refer_dataset(root)` writes

    root/refs(<split_by>).p   refs pickled the way Python 2 wrote them (8-bit `str` opcodes, protocol 2)
    root/instances.json       COCO images / annotations (polygons, multi-part polygons, RLE with list
                              counts and RLE with compressed string counts) / categories
    root/images/*.png         small RGB images with the objects painted in

and returns what it wrote, including the expected uint8 HxW mask of every annotation and sentence, computed
with numpy independently of pycocotools.
"""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

SPLITS = {
    "unc": ["train", "val", "testA", "testB"],
    "umd": ["train", "val", "test"],
    "google": ["train", "val"],
}
CATEGORIES = [
    {"id": 1, "name": "box", "supercategory": "shape"},
    {"id": 2, "name": "pair", "supercategory": "shape"},
    {"id": 3, "name": "disk", "supercategory": "shape"},
]
COLORS = ["red", "green", "blue", "yellow", "white"]
RGB = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (40, 50, 230),
    "yellow": (230, 220, 20),
    "white": (250, 250, 250),
}


# Python-2 style pickle (protocol 2, `str` as 8-bit SHORT_BINSTRING / BINSTRING like cPickle wrote them)


def _py2_pickle_bytes(obj: Any) -> bytes:
    out = bytearray(b"\x80\x02")  # PROTO 2

    def put(value: Any) -> None:
        if isinstance(value, bool):
            out.extend(b"\x88" if value else b"\x89")  # NEWTRUE / NEWFALSE
        elif isinstance(value, int):
            if 0 <= value < 256:
                out.extend(b"K" + bytes([value]))  # BININT1
            elif -(2**31) <= value < 2**31:
                out.extend(b"J" + struct.pack("<i", value))  # BININT
            else:
                raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
                out.extend(b"\x8a" + bytes([len(raw)]) + raw)  # LONG1
        elif isinstance(value, float):
            out.extend(b"G" + struct.pack(">d", value))  # BINFLOAT
        elif isinstance(value, bytes | str):
            raw = value.encode("latin1") if isinstance(value, str) else value
            if len(raw) < 256:
                out.extend(b"U" + bytes([len(raw)]) + raw)  # SHORT_BINSTRING (py2 str)
            else:
                out.extend(b"T" + struct.pack("<i", len(raw)) + raw)  # BINSTRING
        elif isinstance(value, list):
            out.extend(b"](")  # EMPTY_LIST, MARK
            for item in value:
                put(item)
            out.extend(b"e")  # APPENDS
        elif isinstance(value, dict):
            out.extend(b"}(")  # EMPTY_DICT, MARK
            for key, item in value.items():
                put(key)
                put(item)
            out.extend(b"u")  # SETITEMS
        else:
            raise TypeError(f"cannot write {type(value).__name__} as a Python 2 pickle")

    put(obj)
    out.extend(b".")  # STOP
    return bytes(out)


def write_py2_pickle(obj: Any, path: str | Path) -> None:
    """Pickle builtin containers / str / int / float as Python 2 `cPickle.dump(obj, f, 2)` would."""
    Path(path).write_bytes(_py2_pickle_bytes(obj))


# masks


def uncompressed_rle(mask: np.ndarray) -> dict:
    """uint8 HxW -> {"counts": [ints], "size": [h, w]}: column-major runs starting with background."""
    flat = mask.T.reshape(-1).astype(np.uint8)  # column-major order
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0, *runs]  # counts always start with a background run
    return {"counts": [int(v) for v in runs], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def compressed_rle(mask: np.ndarray) -> dict:
    """uint8 HxW -> {"counts": str, "size": [h, w]} in COCO's compressed string form."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"counts": rle["counts"].decode("ascii"), "size": [int(v) for v in rle["size"]]}


def _rect(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> tuple[np.ndarray, list[float]]:
    """Pixels [y0, y1) x [x0, x1) and the polygon pycocotools rasterises to exactly those pixels."""
    mask = np.zeros((h, w), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask, [float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]


def _disk(h: int, w: int, cy: int, cx: int, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


def write_refer_dataset(
    root: str | Path, *, split_by: str = "unc", num_images: int = 6, seed: int = 0, py2_pickle: bool = True
) -> dict[str, Any]:
    """Write a tiny, valid refer-format dataset into `root` and return what was written.

    Image i (odd sizes around 30-60 px) goes to split SPLITS[split_by][i % n_splits] and holds 3
    annotations, each the target of one ref with 2 or 3 sentences: a rectangle polygon, a two-part polygon,
    and a disk stored as RLE (list counts on even images, compressed string counts on odd ones).

    Returns a dict with: data_dir, image_dir, refs_path, instances_path, split_by, splits {split: {"ref_ids",
    "sent_ids" (eval order)}}, refs (the ref dicts), images {image_id: {file_name, height, width, pixels HxWx3
    uint8}}, ann_masks {ann_id: uint8 HxW}, ann_kinds {ann_id: "polygon" | "multi_polygon" | "rle" |
    "rle_compressed"}, sent_masks {sent_id: uint8 HxW}, sent_text {sent_id: str}, sent_ref {sent_id: ref_id}.
    """
    if split_by not in SPLITS:
        raise ValueError(f"split_by must be one of {sorted(SPLITS)}, got {split_by!r}")
    root = Path(root)
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = SPLITS[split_by]
    images, annotations, refs = [], [], []
    written: dict[str, Any] = {
        "images": {},
        "ann_masks": {},
        "ann_kinds": {},
        "sent_masks": {},
        "sent_text": {},
        "sent_ref": {},
        "splits": {s: {"ref_ids": [], "sent_ids": []} for s in splits},
    }
    ann_id, ref_id, sent_id = 1000, 50, 9000
    for i in range(num_images):
        image_id = 581857 + 3 * i
        h, w = 31 + 4 * i + int(rng.integers(0, 3)), 41 + 6 * i + int(rng.integers(0, 3))
        file_name = f"COCO_train2014_{image_id:012d}.png"
        box, box_poly = _rect(h, w, 2, 3, 2 + w // 4, 3 + h // 2)
        left, left_poly = _rect(h, w, w // 3, 2, w // 3 + 5, 9)
        right, right_poly = _rect(h, w, w // 3 + 6, h - 10, w // 3 + 11, h - 3)
        disk = _disk(h, w, h // 2, w - 12, 7.5)
        objects = [
            ("polygon", 1, box, [box_poly]),
            ("multi_polygon", 2, left | right, [left_poly, right_poly]),
            ("rle" if i % 2 == 0 else "rle_compressed", 3, disk, None),
        ]
        pixels = rng.integers(60, 110, size=(h, w, 3), dtype=np.uint8)  # noisy grey background
        split = splits[i % len(splits)]
        for k, (kind, category_id, mask, polygons) in enumerate(objects):
            color = COLORS[(i + k) % len(COLORS)]
            pixels[mask.astype(bool)] = RGB[color]
            if polygons is not None:
                segmentation: Any = polygons
            else:
                segmentation = uncompressed_rle(mask) if kind == "rle" else compressed_rle(mask)
            ys, xs = np.nonzero(mask)
            x0, y0 = int(xs.min()), int(ys.min())
            bbox = [float(x0), float(y0), float(xs.max() + 1 - x0), float(ys.max() + 1 - y0)]
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": bbox,
                    "segmentation": segmentation,
                    "area": float(mask.sum()),
                    "iscrowd": int(polygons is None),
                }
            )
            name = CATEGORIES[category_id - 1]["name"]
            sentences = []
            for j in range(2 + (ref_id % 2)):
                sent = f"the {color} {name} {['left', 'in the middle', 'on the right'][k]} number {j}"
                raw = sent.capitalize() + "."
                if py2_pickle and j == 1:
                    # an 8-bit py2 str: ASCII decoding fails and the loader must fall back to latin-1
                    raw += " caf\xe9"
                sentences.append({"raw": raw, "sent": sent, "sent_id": sent_id, "tokens": sent.split()})
                written["sent_masks"][sent_id] = mask
                written["sent_text"][sent_id] = sent
                written["sent_ref"][sent_id] = ref_id
                written["splits"][split]["sent_ids"].append(sent_id)
                sent_id += 1
            refs.append(
                {
                    "ref_id": ref_id,
                    "ann_id": ann_id,
                    "image_id": image_id,
                    "category_id": category_id,
                    "split": split,
                    "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg",
                    "sent_ids": [s["sent_id"] for s in sentences],
                    "sentences": sentences,
                }
            )
            written["splits"][split]["ref_ids"].append(ref_id)
            written["ann_masks"][ann_id] = mask
            written["ann_kinds"][ann_id] = kind
            ann_id += 1
            ref_id += 1
        Image.fromarray(pixels, mode="RGB").save(image_dir / file_name)
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w, "license": 1})
        written["images"][image_id] = {"file_name": file_name, "height": h, "width": w, "pixels": pixels}

    refs_path = root / f"refs({split_by}).p"
    if py2_pickle:
        write_py2_pickle(refs, refs_path)
    else:
        refs_path.write_bytes(pickle.dumps(refs, protocol=2))
    instances_path = root / "instances.json"
    instances = {
        "info": {"description": "vlalign test fixture"},
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    instances_path.write_text(json.dumps(instances))
    written.update(
        data_dir=root,
        image_dir=image_dir,
        refs_path=refs_path,
        instances_path=instances_path,
        split_by=split_by,
        refs=refs,
    )
    return written
