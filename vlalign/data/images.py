"""Safe image reading with errors that name the file.

`load_image` always returns a fully decoded RGB `PIL.Image`: a corrupt or truncated file raises `ImageError`
instead of coming back half grey, and the pixel count is checked from the header before any decoding.
`load_mask_png` reads binary / palette PNG masks (nonzero = foreground) with the same checks.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ["DEFAULT_MAX_PIXELS", "ImageError", "load_image", "load_mask_png"]

# 8192 x 8192: far above any referring data set (COCO images are <= 640 px) but small enough that one bad
# header cannot make a data-loader worker allocate gigabytes.
DEFAULT_MAX_PIXELS = 8192 * 8192

# Modes that PIL converts to RGB correctly by itself. Alpha (LA, PA, RGBA) is *dropped*, not composited:
# this is what `Image.open(path).convert("RGB")` does in LAVT, CRIS and LGFormer, so pretrained weights see
# the same pixels.
_DIRECT_TO_RGB = {
    "RGB",
    "L",
    "LA",
    "P",
    "PA",
    "RGBA",
    "RGBX",
    "RGBa",
    "La",
    "CMYK",
    "YCbCr",
    "LAB",
    "HSV",
    "1",
}
# Integer modes holding up to 16 bits (16-bit PNG/TIFF opens as I;16 or I depending on the PIL version).
# PIL's own convert("RGB") clips them at 255, so they are rescaled by 255/65535 here instead.
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


class ImageError(ValueError):
    """An image file exists but cannot be used (undecodable, truncated, too large or of unsupported mode)."""


def open_decoded(path: str | os.PathLike, max_pixels: int, what: str) -> Image.Image:
    """Open `path`, check its header size against `max_pixels` and force a full decode.

    Returns the loaded image in its file mode; the file handle is closed on return.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    # The file is opened here, outside the try below, so permission and I/O errors keep their own type
    # instead of being reported as "cannot be decoded".
    with open(path, "rb") as handle:
        try:
            image = Image.open(handle)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"{what} {path} is {width}x{height} = {width * height} pixels, over the limit of "
                    f"{max_pixels} pixels (max_pixels); refusing to decode it"
                )
            # Image.open only reads the header; load() decodes every byte, so truncation is caught here
            # (as long as nobody set PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True process-wide).
            image.load()
        except ImageError:
            raise
        except Image.DecompressionBombError as err:
            raise ImageError(f"{what} {path} is too large for PIL's decompression-bomb limit: {err}") from err
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as err:
            # PIL reports corrupt data with any of these, depending on the codec.
            raise ImageError(f"{what} {path} cannot be decoded (corrupt or truncated file): {err}") from err
    return image


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    """Scale an integer (16-bit range) single-channel image to 8 bits and replicate it to RGB."""
    values = np.asarray(image).astype(np.float64)  # HxW, uint16 or int32
    eight_bit = np.rint(np.clip(values, 0, 65535) * (255.0 / 65535.0)).astype(np.uint8)
    return Image.fromarray(eight_bit, mode="L").convert("RGB")


def load_image(
    path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS, exif_transpose: bool = False
) -> Image.Image:
    """Read an image file as a fully decoded RGB `PIL.Image` (size W x H = the file's pixel grid).

    Mode handling: L, P, 1, CMYK and other colour modes use PIL's conversion; LA, PA and RGBA drop their
    alpha channel (no compositing, like `convert("RGB")` in the reference pipelines); I;16 / I (16-bit grey)
    are scaled to 8 bits by 255/65535. Float (F) images raise `ImageError`.

    `exif_transpose=False` by default because COCO / refer masks are drawn on the stored pixel grid: rotating
    the image by its EXIF tag would misalign it with its annotations.

    Raises FileNotFoundError (missing file) or ImageError (undecodable, truncated, over `max_pixels`, bad
    mode), each naming `path`.
    """
    image = open_decoded(path, max_pixels, "image")
    if exif_transpose:
        image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT:
        return _sixteen_bit_to_rgb(image)
    if image.mode in _DIRECT_TO_RGB:
        return image.convert("RGB")
    raise ImageError(
        f"image {path} has mode {image.mode!r}, which cannot be converted to RGB "
        f"(expected one of {sorted(_DIRECT_TO_RGB | _SIXTEEN_BIT)})"
    )


def load_mask_png(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a binary or palette mask image: returns uint8 HxW with 1 where the stored value is nonzero.

    Palette (P) masks are judged by their palette *index* (index 0 = background, as in DAVIS and
    Ref-YouTube-VOS), grey masks by their value, colour masks by any nonzero colour channel (alpha is
    ignored).
    """
    image = open_decoded(path, max_pixels, "mask")
    if image.mode in ("PA", "LA", "La"):
        values = np.asarray(image)[..., 0]  # HxW palette index / grey value, alpha dropped
    elif image.mode in ("RGBA", "RGBa"):
        values = np.asarray(image)[..., :3]
    else:  # P gives palette indices, not colours
        values = np.asarray(image)
    if values.dtype.kind not in "biu":
        raise ImageError(f"mask {path} has mode {image.mode!r}; expected an integer or palette mask image")
    if values.ndim == 3:
        values = values.any(axis=2)
    return (values != 0).astype(np.uint8)
