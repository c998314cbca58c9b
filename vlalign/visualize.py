"""Mask overlays for predictions and ground truth (PIL in, PIL out)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

# distinct colours for several expressions on one image (RGB)
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))


def overlay_mask(image: Image.Image, mask: np.ndarray, color=PALETTE[0], alpha: float = 0.5) -> Image.Image:
    """Blend `color` over the pixels of `mask` (HxW bool, same size as `image`) and outline its boundary."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    m = np.asarray(mask, dtype=bool)
    if m.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {m.shape} does not match image size {rgb.shape[:2]} (HxW)")
    out = rgb.copy()
    out[m] = (1 - alpha) * rgb[m] + alpha * np.asarray(color, dtype=np.float32)
    # boundary = mask pixels with a 4-neighbour outside the mask; drawn opaque so thin objects stay visible
    pad = np.pad(m, 1)
    inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    out[m & ~inner] = color
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def captioned(image: Image.Image, caption: str) -> Image.Image:
    """`image` with a caption strip above it (default bitmap font: no font files needed)."""
    strip = 14 * (1 + len(caption) * 6 // max(image.width, 1))
    canvas = Image.new("RGB", (image.width, image.height + strip), (255, 255, 255))
    canvas.paste(image, (0, strip))
    draw = ImageDraw.Draw(canvas)
    per_line = max(image.width // 6, 1)
    for i in range(0, len(caption), per_line):
        draw.text((2, 1 + 14 * (i // per_line)), caption[i : i + per_line], fill=(0, 0, 0))
    return canvas


def side_by_side(*images: Image.Image, gap: int = 4) -> Image.Image:
    """Images left to right on a white canvas, top-aligned."""
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, max(im.height for im in images)), (255, 255, 255))
    x = 0
    for im in images:
        canvas.paste(im, (x, 0))
        x += im.width + gap
    return canvas
