"""COCO segmentations (polygons or RLE) -> binary masks, with validation before pycocotools sees the data.

pycocotools does not check its input: a 4-number polygon is silently read as a box, and RLE counts that sum
to less than H*W decode into uninitialised memory. Every segmentation is therefore checked here first, and a
bad one raises ValueError naming the annotation id and the file it came from.

Polygons are rasterised and merged by pycocotools (`frPyObjects`, `merge`); run lengths are expanded to pixels
here with numpy, since the run lengths must be decoded for validation anyway and `pycocotools.mask.decode`
relies on numpy's deprecated `copy=False` array protocol (a DeprecationWarning under numpy 2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

__all__ = ["decode_segmentation", "polygons_to_mask", "rle_to_mask"]


def _where(ann_id: Any, source: str) -> str:
    return f"{source or '<segmentation>'}: annotation {ann_id}"


def polygons_to_mask(
    polygons: Sequence[Sequence[float]], height: int, width: int, *, ann_id: Any = None, source: str = ""
) -> np.ndarray:
    """Rasterise COCO polygons (list of flat [x1, y1, x2, y2, ...] lists) into one uint8 HxW mask {0, 1}.

    The parts are merged (union), like the refer API's `getMask`. Parts with fewer than 3 points enclose no
    area; COCO 2014 contains a few, so they are skipped (as Detectron does) as long as one real part remains.
    """
    where = _where(ann_id, source)
    if not isinstance(polygons, list | tuple) or len(polygons) == 0:
        raise ValueError(f"{where}: segmentation must be a non-empty list of polygons, got {polygons!r:.80}")
    clean: list[list[float]] = []
    for k, poly in enumerate(polygons):
        if not isinstance(poly, list | tuple):
            raise ValueError(
                f"{where}: polygon {k} must be a flat list [x1, y1, x2, y2, ...], got {type(poly).__name__}"
            )
        if not all(isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) for v in poly):
            raise ValueError(f"{where}: polygon {k} contains values that are not finite numbers")
        if len(poly) % 2 != 0:
            raise ValueError(f"{where}: polygon {k} has an odd number of coordinates ({len(poly)})")
        if len(poly) >= 6:
            clean.append([float(v) for v in poly])
    if not clean:
        # pycocotools would read a 4-number polygon as a bounding box: refuse instead.
        raise ValueError(f"{where}: no polygon has at least 3 points (lengths {[len(p) for p in polygons]})")
    merged = coco_mask.merge(coco_mask.frPyObjects(clean, height, width))
    return _runs_to_mask(_decode_compressed_counts(merged["counts"].decode("ascii"), where), height, width)


def _runs_to_mask(runs: list[int], height: int, width: int) -> np.ndarray:
    """Column-major run lengths (background first, summing to H*W) -> uint8 HxW mask {0, 1}."""
    values = (np.arange(len(runs)) % 2).astype(np.uint8)  # 0, 1, 0, 1, ...
    column_major = np.repeat(values, np.asarray(runs, dtype=np.int64))
    return np.ascontiguousarray(column_major.reshape(width, height).T)


def _decode_compressed_counts(counts: str, where: str) -> list[int]:
    """Decode COCO's compressed RLE string into run lengths, refusing malformed strings.

    Format (maskApi.c rleToString): each count is written in 5-bit groups, least significant first, as
    characters 48 + group, with bit 0x20 meaning "more groups follow" and bit 0x10 of the last group the
    sign; from the third count on, the value stored is the difference to the count two places before.
    """
    values: list[int] = []
    pos = 0
    while pos < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(counts):
                raise ValueError(f"{where}: compressed RLE counts end in the middle of a number")
            code = ord(counts[pos]) - 48
            if not 0 <= code < 64:
                raise ValueError(
                    f"{where}: compressed RLE counts contain the invalid character {counts[pos]!r}"
                )
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            pos += 1
            shift += 5
            if not more and code & 0x10:
                value -= 1 << shift  # sign-extend
        if len(values) > 2:
            value += values[-2]
        values.append(value)
    return values


def rle_to_mask(rle: dict, height: int, width: int, *, ann_id: Any = None, source: str = "") -> np.ndarray:
    """Decode a COCO RLE dict {"counts": [ints] or str, "size": [h, w]} into a uint8 HxW mask {0, 1}.

    Counts run down the columns (column-major), starting with background. `size` must equal (height, width).
    """
    where = _where(ann_id, source)
    if "counts" not in rle or "size" not in rle:
        raise ValueError(f"{where}: RLE segmentation needs fields 'counts' and 'size', got {sorted(rle)}")
    size = rle["size"]
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
    ):
        raise ValueError(f"{where}: RLE 'size' must be [height, width] integers, got {size!r}")
    if list(size) != [height, width]:
        raise ValueError(f"{where}: RLE size {list(size)} does not match the image size [{height}, {width}]")
    counts = rle["counts"]
    if isinstance(counts, bytes):
        try:
            counts = counts.decode("ascii")
        except UnicodeDecodeError as err:
            raise ValueError(f"{where}: compressed RLE counts are not ASCII") from err
    if isinstance(counts, str):
        runs = _decode_compressed_counts(counts, where)
    elif isinstance(counts, list | tuple):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
            raise ValueError(f"{where}: uncompressed RLE 'counts' must be a list of integers")
        runs = list(counts)
    else:
        raise ValueError(f"{where}: RLE 'counts' must be a list of integers or a string, got {type(counts)}")
    if any(v < 0 for v in runs):
        raise ValueError(f"{where}: RLE counts contain a negative run length")
    if sum(runs) != height * width:
        raise ValueError(
            f"{where}: RLE counts sum to {sum(runs)} pixels but the image has {height}x{width} = "
            f"{height * width}"
        )
    return _runs_to_mask(runs, height, width)


def decode_segmentation(
    segmentation: Any, height: int, width: int, *, ann_id: Any = None, source: str = ""
) -> np.ndarray:
    """Decode a COCO `segmentation` field (polygon list or RLE dict) into a uint8 HxW mask {0, 1}."""
    if isinstance(segmentation, dict):
        return rle_to_mask(segmentation, height, width, ann_id=ann_id, source=source)
    if isinstance(segmentation, list | tuple):
        return polygons_to_mask(segmentation, height, width, ann_id=ann_id, source=source)
    raise ValueError(
        f"{_where(ann_id, source)}: 'segmentation' must be a list of polygons or an RLE dict, "
        f"got {type(segmentation).__name__}"
    )
