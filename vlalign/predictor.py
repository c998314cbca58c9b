"""ReferringSegmenter: a stateful predictor around a pure referring-segmentation model.

The model stays tensor-in / tensor-out (ARCHITECTURE.md); this class handles images of any size and mode,
resizing to the model's input, caching the prepared image for several expressions, batching expressions,
and mapping masks back to the original resolution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vlalign.data.images import load_image
from vlalign.data.transforms import ResizeSquare


def as_pil(image: Image.Image | np.ndarray | str | Path) -> Image.Image:
    """PIL RGB from a PIL image, an HxW / HxWx3 / HxWx4 uint8 array, or an image path."""
    if isinstance(image, str | Path):
        return load_image(image, exif_transpose=True)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise ValueError(
                f"image array must be uint8 HxW, HxWx3 or HxWx4, got dtype {image.dtype} shape {image.shape}"
            )
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, a numpy array or a path, got {type(image).__name__}")
    return image.convert("RGB")


class ReferringSegmenter:
    """Segment what a sentence refers to in an image.

    >>> seg = ReferringSegmenter.from_pretrained("runs/demo/model")
    >>> seg.set_image(Image.open("photo.jpg"))
    >>> mask = seg.predict("the dog on the left")      # bool HxW, the photo's size
    """

    def __init__(self, model: torch.nn.Module, *, input_size: int | None = None, device=None,
                 batch_size: int = 8):
        self.model = model.eval()
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.model.to(self.device)
        size = input_size or model.config.input_size
        self.transform = ResizeSquare(size)  # the protocol the models are trained with (LAVT)
        self.batch_size = batch_size
        self._image: torch.Tensor | None = None  # (1, 3, S, S) on device
        self._params: dict | None = None
        self._size: tuple[int, int] | None = None

    @classmethod
    def from_pretrained(cls, path: str | Path, device=None, **kwargs) -> ReferringSegmenter:
        from vlalign.models.pretrained import from_pretrained

        return cls(from_pretrained(path, map_location=device or "cpu"), device=device, **kwargs)

    def set_image(self, image: Image.Image | np.ndarray | str | Path) -> None:
        """Prepare an image once; every following `predict` call reuses it."""
        pil = as_pil(image)
        tensor, _, params = self.transform(pil, None)
        self._image = tensor.unsqueeze(0).to(self.device)
        self._params = params
        self._size = (pil.height, pil.width)

    @torch.inference_mode()
    def predict(self, expressions: str | list[str], threshold: float = 0.5, return_probs: bool = False):
        """Mask(s) at the original image size: bool HxW for one string, a list for a list of strings.

        With `return_probs`, float32 probabilities in [0, 1] instead of booleans.
        """
        if self._image is None:
            raise RuntimeError("call set_image() before predict()")
        single = isinstance(expressions, str)
        texts = [expressions] if single else list(expressions)
        if not texts:
            raise ValueError("no expression given")
        outputs = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            tok = self.model.tokenize(chunk)
            image = self._image.expand(len(chunk), -1, -1, -1)
            logits = self.model(image, tok["tokens"].to(self.device), tok["token_mask"].to(self.device))["logits"]
            probs = self.transform.invert(logits.float().sigmoid(), self._params)  # (b, H, W)
            outputs.extend(p.cpu().numpy() for p in probs)
        masks = [p if return_probs else p > threshold for p in outputs]
        return masks[0] if single else masks
