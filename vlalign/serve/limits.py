"""What the web demo accepts: upload size, image dimensions, video length, expressions, gallery size.

Each check raises `InputError` with a message meant for the person in front of the browser (what was wrong,
what the limit is, what to do); the tabs show it in their status box. Nothing here imports gradio.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vlalign.data.images import ImageError, load_image

MB = 1024 * 1024


class InputError(ValueError):
    """A request the demo refuses, with a message for the user."""


@dataclass(frozen=True)
class Limits:
    """Bounds of one request, and how many requests run and wait at once (`vlalign serve` flags)."""

    max_upload_mb: float = 20.0  # per file, enforced by the server before the upload is stored
    max_image_side: int = 4096  # longest side of an uploaded image, in pixels
    max_video_seconds: float = 20.0
    max_video_frames: int = 600
    max_gallery_images: int = 500
    max_expressions: int = 8
    max_expression_chars: int = 200
    concurrency: int = 1  # model calls running at once (CPU: more only splits the same cores)
    queue_size: int = 64  # requests waiting beyond that; more are refused with "queue full"

    def __post_init__(self):
        for name in ("max_upload_mb", "max_image_side", "max_video_seconds", "max_video_frames",
                     "max_gallery_images", "max_expressions", "max_expression_chars", "concurrency", "queue_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)}")


def _name(path: str | os.PathLike) -> str:
    # gradio stores uploads under a random folder: show the user their own file name only
    return Path(path).name


def check_upload(path: str | os.PathLike | None, what: str, limits: Limits) -> Path:
    """The uploaded file exists and is within the upload size."""
    if path is None or str(path) == "":
        raise InputError(f"Please upload {what} first.")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"The uploaded {what} could not be found on the server; please upload it again.")
    size = path.stat().st_size
    if size > limits.max_upload_mb * MB:
        raise InputError(f"{_name(path)} is {size / MB:.1f} MB; the limit is {limits.max_upload_mb:g} MB per file.")
    return path


def check_image(path: str | os.PathLike | None, limits: Limits, what: str = "an image") -> Image.Image:
    """Decode an uploaded image (RGB, EXIF orientation applied) or explain why it cannot be used."""
    path = check_upload(path, what, limits)
    side = limits.max_image_side
    try:
        # the pixel bound is checked from the header, before decoding (vlalign.data.images)
        image = load_image(path, max_pixels=side * side, exif_transpose=True)
    except ImageError as e:
        if "max_pixels" in str(e):
            raise InputError(f"{_name(path)} is too large: images up to {side}x{side} pixels are accepted; "
                             f"please resize it.") from e
        raise InputError(f"{_name(path)} is not an image that can be read (PNG, JPEG, WebP, BMP, TIFF or GIF "
                         f"expected).") from e
    if max(image.size) > side:
        raise InputError(f"{_name(path)} is {image.width}x{image.height} pixels; the longest side may be at most "
                         f"{side} pixels. Please resize it.")
    return image


def parse_expressions(text: str | None, limits: Limits) -> list[str]:
    """One expression per line (blank lines ignored)."""
    lines = [line.strip() for line in re.split(r"[\r\n]+", text or "")]
    expressions = [line for line in lines if line]
    if not expressions:
        raise InputError("Please type at least one expression (one per line), e.g. \"the man on the left\".")
    if len(expressions) > limits.max_expressions:
        raise InputError(f"{len(expressions)} expressions given; at most {limits.max_expressions} per request.")
    for e in expressions:
        if len(e) > limits.max_expression_chars:
            raise InputError(f"An expression is {len(e)} characters long; at most {limits.max_expression_chars}.")
    return expressions


def check_video(path: str | os.PathLike | None, limits: Limits) -> tuple[float, int, float]:
    """Open an uploaded video and check its length: returns (fps, frame count, seconds)."""
    path = check_upload(path, "a video", limits)
    try:
        import cv2
    except ImportError as e:
        raise InputError("Reading videos needs OpenCV on the server (pip install 'vlalign[video]').") from e
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise InputError(f"{_name(path)} is not a video that can be read (MP4, AVI, WebM or MOV expected).")
        fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        ok, _ = capture.read()
        if ok and frames <= 0:  # no count in the header (browser recordings, some WebM): count, one past the limit
            frames = 1
            while frames <= limits.max_video_frames and capture.grab():
                frames += 1
    finally:
        capture.release()
    if not ok or frames <= 0:
        raise InputError(f"{_name(path)} holds no readable frames.")
    seconds = frames / fps if fps > 0 else float("inf")
    if frames > limits.max_video_frames or seconds > limits.max_video_seconds:
        raise InputError(f"{_name(path)} is {seconds:.1f} s ({frames} frames); the limit is "
                         f"{limits.max_video_seconds:g} s and {limits.max_video_frames} frames. Please trim it.")
    return fps, frames, seconds
