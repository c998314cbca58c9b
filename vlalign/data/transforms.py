"""Input transforms for referring segmentation, each with an `invert` back to the original resolution.

Both transforms are called as `transform(image, mask) -> (image 3xSxS float [0,1], mask SxS float or None,
params)`. `params` holds plain Python numbers and strings only, so it pickles across data-loader workers and
stays a list of dicts in a batch; `invert(pred, params)` (or the module-level `invert_prediction`, which reads
`params["kind"]`) maps a ...xSxS prediction back to ...xHxW.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["Letterbox", "ResizeSquare", "identity_params", "invert_prediction", "pil_to_tensor"]

# ImageNet mean in 0..255: the padded border becomes ~0 after the models' mean/std normalisation (CRIS pads
# with its normalisation mean for the same reason).
IMAGENET_MEAN_255 = (124, 116, 104)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB `PIL.Image` (W x H) -> float32 tensor 3xHxW in [0, 1]."""
    if image.mode != "RGB":
        raise ValueError(
            f"expected an RGB image, got mode {image.mode!r} (use vlalign.data.images.load_image)"
        )
    array = np.asarray(image, dtype=np.uint8)  # HxWx3
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def _check_mask(mask: np.ndarray, image: Image.Image) -> np.ndarray:
    if mask.ndim != 2 or mask.shape != (image.height, image.width):
        raise ValueError(
            f"mask has shape {mask.shape}, expected the image's (H, W) = {(image.height, image.width)}"
        )
    return (np.asarray(mask) != 0).astype(np.uint8)


def _resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize of a uint8 HxW {0,1} mask to height x width (PIL, like LAVT)."""
    return np.asarray(Image.fromarray(mask).resize((width, height), Image.NEAREST))


def _as_float_maps(pred: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """...xSxS -> (N x 1 x S x S float tensor, leading shape)."""
    if pred.ndim < 2 or tuple(pred.shape[-2:]) != (size, size):
        raise ValueError(f"prediction has shape {tuple(pred.shape)}, expected ...x{size}x{size}")
    lead = tuple(pred.shape[:-2])
    maps = pred.reshape(-1, 1, size, size)
    if not maps.is_floating_point():
        maps = maps.float()
    return maps, lead


def _resize_maps(maps: torch.Tensor, height: int, width: int, lead: tuple[int, ...]) -> torch.Tensor:
    """Bilinear N x 1 x h x w -> ...xHxW. Continuous values are interpolated; callers threshold afterwards."""
    out = F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False)
    return out.reshape(*lead, height, width)


def identity_params(height: int, width: int) -> dict[str, Any]:
    """Params of "no transform": the sample stays at its original H x W."""
    return {"kind": "identity", "height": int(height), "width": int(width)}


class ResizeSquare:
    """LAVT protocol: image resized to SxS, bilinear (aspect ratio not kept); mask resized with nearest."""

    def __init__(self, size: int) -> None:
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"ResizeSquare size must be a positive int, got {size!r}")
        self.size = size

    def __repr__(self) -> str:
        return f"ResizeSquare(size={self.size})"

    def __call__(
        self, image: Image.Image, mask: np.ndarray | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
        s = self.size
        params = {"kind": "resize_square", "size": s, "height": image.height, "width": image.width}
        image_t = pil_to_tensor(image.resize((s, s), Image.BILINEAR))
        mask_t = None
        if mask is not None:
            mask_t = torch.from_numpy(_resize_mask(_check_mask(mask, image), s, s).astype(np.float32))
        return image_t, mask_t, params

    def labels(self, labels: np.ndarray) -> torch.Tensor:
        """HxW integer object ids (0..255, a palette PNG's) -> int64 SxS, nearest (ids are not blended)."""
        if labels.ndim != 2 or labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
            lo, hi = labels.min(initial=0), labels.max(initial=0)
            raise ValueError(f"label map of shape {labels.shape}, ids {lo}..{hi}: expected HxW ids in 0..255")
        return torch.from_numpy(_resize_mask(labels.astype(np.uint8), self.size, self.size).astype(np.int64))

    @staticmethod
    def invert(pred: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        """...xSxS logits or probabilities -> ...xHxW (bilinear, no thresholding)."""
        maps, lead = _as_float_maps(pred, int(params["size"]))
        return _resize_maps(maps, int(params["height"]), int(params["width"]), lead)


class Letterbox:
    """Aspect-preserving resize so that the long side is `size`, then centred padding to SxS.

    The image border is filled with `fill` (0..255 grey level or RGB triple; default the ImageNet mean); the
    mask border is 0 (background).
    """

    def __init__(self, size: int, fill: int | tuple[int, int, int] = IMAGENET_MEAN_255) -> None:
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"Letterbox size must be a positive int, got {size!r}")
        fill_rgb = (fill,) * 3 if isinstance(fill, int) else tuple(fill)
        if len(fill_rgb) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in fill_rgb):
            raise ValueError(f"Letterbox fill must be an int or 3 ints in 0..255, got {fill!r}")
        self.size = size
        self.fill = fill_rgb

    def __repr__(self) -> str:
        return f"Letterbox(size={self.size}, fill={self.fill})"

    def geometry(self, height: int, width: int) -> dict[str, Any]:
        """The params for an original H x W image: scaled size and top/left padding inside SxS."""
        s = self.size
        scale = s / max(height, width)
        new_h = min(s, max(1, round(height * scale)))
        new_w = min(s, max(1, round(width * scale)))
        return {
            "kind": "letterbox",
            "size": s,
            "height": int(height),
            "width": int(width),
            "new_height": new_h,
            "new_width": new_w,
            "pad_top": (s - new_h) // 2,
            "pad_left": (s - new_w) // 2,
        }

    def __call__(
        self, image: Image.Image, mask: np.ndarray | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
        p = self.geometry(image.height, image.width)
        s, top, left = self.size, p["pad_top"], p["pad_left"]
        canvas = Image.new("RGB", (s, s), self.fill)
        canvas.paste(image.resize((p["new_width"], p["new_height"]), Image.BILINEAR), (left, top))
        mask_t = None
        if mask is not None:
            small = _resize_mask(_check_mask(mask, image), p["new_width"], p["new_height"])
            padded = np.zeros((s, s), dtype=np.float32)
            padded[top : top + p["new_height"], left : left + p["new_width"]] = small
            mask_t = torch.from_numpy(padded)
        return pil_to_tensor(canvas), mask_t, p

    @staticmethod
    def invert(pred: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        """...xSxS logits or probabilities -> ...xHxW: crop the padding, then bilinear resize."""
        maps, lead = _as_float_maps(pred, int(params["size"]))
        top, left = int(params["pad_top"]), int(params["pad_left"])
        crop = maps[:, :, top : top + int(params["new_height"]), left : left + int(params["new_width"])]
        return _resize_maps(crop, int(params["height"]), int(params["width"]), lead)


def _invert_identity(pred: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    height, width = int(params["height"]), int(params["width"])
    if pred.ndim < 2 or tuple(pred.shape[-2:]) != (height, width):
        raise ValueError(f"prediction has shape {tuple(pred.shape)}, expected ...x{height}x{width}")
    return pred if pred.is_floating_point() else pred.float()


_INVERTERS = {
    "identity": _invert_identity,
    "resize_square": ResizeSquare.invert,
    "letterbox": Letterbox.invert,
}


def invert_prediction(pred: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """Map a ...xSxS prediction back to ...xHxW using whichever transform produced `params`."""
    kind = params.get("kind") if isinstance(params, dict) else None
    if kind not in _INVERTERS:
        raise ValueError(f"transform params have kind {kind!r}; expected one of {sorted(_INVERTERS)}")
    return _INVERTERS[kind](pred, params)
