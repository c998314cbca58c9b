"""How good can a mask predicted at the model's resolution be? The IoU of a *perfect* low-resolution map.

For each ref of a split: the target resized to the model's input (SxS, nearest, as training sees it),
area-averaged to S/stride (the best a stride-`stride` logit map can hold), upsampled bilinearly back to the
image and thresholded at 0.5, exactly as predictions are (vlalign.data.transforms.ResizeSquare.invert).
Its IoU with the original target is the ceiling of a model that picks the right object every time.

    .venv/bin/python benchmarks/mask_ceiling_refseg.py [--data runs/bench/data --size 160 --strides 4 2 1]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from vlalign.data.refer import ReferDataset
from vlalign.metrics.refseg import iou


def ceiling_iou(target: np.ndarray, size: int, stride: int) -> float:
    """target: bool HxW -> IoU of its best stride-`stride` map at input size `size`, back at HxW."""
    t = torch.from_numpy(target.astype(np.float32))[None, None]
    seen = F.interpolate(t, size=(size, size), mode="nearest")
    coarse = F.interpolate(seen, size=(size // stride, size // stride), mode="area")
    back = F.interpolate(coarse, size=target.shape, mode="bilinear", align_corners=False)[0, 0].numpy() > 0.5
    return iou((back & target).sum(), (back | target).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/bench/data")
    parser.add_argument("--split", default="val")
    parser.add_argument("--size", type=int, default=160, help="the model's input side")
    parser.add_argument("--strides", type=int, nargs="+", default=[4, 2, 1])
    parser.add_argument("--max-refs", type=int, default=300)
    args = parser.parse_args()
    if any(args.size % s for s in args.strides):
        parser.error(f"every stride must divide --size {args.size}, got {args.strides}")
    dataset = ReferDataset(args.data, args.split, mode="eval")
    masks = [dataset.ann_mask(ref["ann_id"]).astype(bool) for ref in dataset.refs[: args.max_refs]]
    print(f"{len(masks)} refs of {args.data} ({args.split}), input {args.size}x{args.size}")
    print("| stride | map | mean IoU | 10th percentile |\n|---:|---|---:|---:|")
    for s in args.strides:
        values = [ceiling_iou(m, args.size, s) for m in masks]
        print(f"| {s} | {args.size // s}x{args.size // s} | {np.mean(values):.3f} | {np.percentile(values, 10):.3f} |")


if __name__ == "__main__":
    main()
