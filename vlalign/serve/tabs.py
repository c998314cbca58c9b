"""What each tab of the web demo does with a request, without gradio: plain functions, testable directly.

Each handler returns its outputs plus a Markdown status line; a refused request (`InputError`) or a model
folder that cannot be used gives outputs of None and the reason in the status, never a traceback.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vlalign.serve.limits import InputError, Limits, check_image, check_upload, check_video, parse_expressions
from vlalign.serve.models import HOW_TO_GET, PredictorCache

log = logging.getLogger("vlalign.serve")

KEEP_RESULTS = 64  # request folders kept on disk (downloads of recent results stay valid)


class ResultDirs:
    """One fresh folder per request under a private temporary root; only the newest KEEP_RESULTS are kept."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="vlalign-serve-"))
        self.root.mkdir(parents=True, exist_ok=True)

    def new(self) -> Path:
        folders = sorted(self.root.iterdir(), key=lambda p: p.stat().st_mtime)
        for old in folders[: max(0, len(folders) - KEEP_RESULTS + 1)]:
            shutil.rmtree(old, ignore_errors=True)
        path = self.root / uuid.uuid4().hex[:12]
        path.mkdir()
        return path


def no_model_message(task: str) -> str:
    return f"**No trained model for this tab.** To get one, {HOW_TO_GET[task]}."


def _pick(folder: str | None, cache: PredictorCache, task: str) -> str:
    if not cache.allowed:
        raise InputError(no_model_message(task))
    if not folder:
        raise InputError("Please pick a model folder.")
    if folder not in cache.allowed:
        raise InputError(f"{folder} is not one of the model folders this server offers.")
    return folder


def _load(cache: PredictorCache, folder: str):
    try:
        return cache.get(folder)
    except (FileNotFoundError, ValueError, KeyError, OSError) as e:
        log.exception("loading %s failed", folder)
        raise InputError(f"The model folder {folder} cannot be loaded: {e}") from e


def segment_image(cache: PredictorCache, results: ResultDirs, limits: Limits, image_path: str | None,
                  expressions: str | None, folder: str | None, threshold: float = 0.5
                  ) -> tuple[Image.Image | None, list[str] | None, str]:
    """Referring image segmentation: (overlay of every mask, [mask PNGs..., masks.zip], status)."""
    from vlalign.visualize import PALETTE, overlay_mask

    try:
        folder = _pick(folder, cache, "image")
        image = check_image(image_path, limits)
        texts = parse_expressions(expressions, limits)
        start = time.perf_counter()
        with cache.lock(folder):  # the predictor keeps the current image: one request at a time per model
            predictor = _load(cache, folder)
            predictor.set_image(image)
            masks = predictor.predict(texts, threshold=float(threshold))
        seconds = time.perf_counter() - start
    except InputError as e:
        return None, None, f"⚠️ {e}"
    out = results.new()
    overlay, files, legend = image, [], []
    for k, (mask, text) in enumerate(zip(masks, texts)):
        color = PALETTE[k % len(PALETTE)]
        overlay = overlay_mask(overlay, mask, color=color)
        path = out / f"mask_{k + 1}.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(path)
        files.append(str(path))
        share = 100.0 * mask.mean()
        legend.append(f"<span style='color:rgb{color}'>■</span> {k + 1}. “{text}”: {share:.1f}% of the image")
    archive = out / "masks.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in files:
            zf.write(path, Path(path).name)
    status = (f"✅ {len(texts)} mask(s) from `{Path(folder).as_posix()}` in {seconds:.2f} s "
              f"({image.width}x{image.height}).<br>" + "<br>".join(legend))
    return overlay, [*files, str(archive)], status


def segment_video(cache: PredictorCache, results: ResultDirs, limits: Limits, video_path: str | None,
                  expressions: str | None, folder: str | None, threshold: float = 0.5
                  ) -> tuple[str | None, str]:
    """Referring video segmentation: (overlay video .mp4, status)."""
    try:
        folder = _pick(folder, cache, "video")
        fps, frames, seconds = check_video(video_path, limits)
        texts = parse_expressions(expressions, limits)
        from vlalign.video_predictor import predict_video

        out = results.new() / "overlay.mp4"
        start = time.perf_counter()
        with cache.lock(folder):
            predictor = _load(cache, folder)
            predict_video(str(video_path), texts, out, segmenter=predictor, threshold=float(threshold))
        took = time.perf_counter() - start
    except InputError as e:
        return None, f"⚠️ {e}"
    return str(out), (f"✅ {frames} frames ({seconds:.1f} s at {fps:.0f} fps), {len(texts)} expression(s) in "
                      f"{took:.1f} s from `{Path(folder).as_posix()}`.")


def _gallery(path: str | None, limits: Limits, out: Path) -> Path:
    """An uploaded zip of images (extracted safely) as a folder."""
    path = check_upload(path, "a gallery (a .zip of images)", limits)
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path.name} is not a .zip file: upload the gallery images as one zip archive.")
    folder = out / "gallery"
    with zipfile.ZipFile(path) as zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) > limits.max_gallery_images:
            raise InputError(f"the gallery holds {len(members)} files; at most {limits.max_gallery_images}.")
        if sum(m.file_size for m in members) > 4 * limits.max_upload_mb * 1024 * 1024:
            raise InputError("the gallery is too large once unpacked.")
        for k, m in enumerate(members):  # flat, numbered names: no path in the archive reaches the disk
            suffix = Path(m.filename).suffix.lower()[:6]
            target = folder / f"{k:05d}_{Path(m.filename).stem[:40]}{suffix}"
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return folder


def search_reid(cache: PredictorCache, results: ResultDirs, limits: Limits, query_path: str | None,
                gallery_zip: str | None, folder: str | None, topk: int = 10) -> tuple[Image.Image | None, str]:
    """Re-identification: (contact sheet of the query and its `topk` nearest gallery images, status)."""
    try:
        folder = _pick(folder, cache, "reid")
        check_image(query_path, limits, "a query image")
        out = results.new()
        gallery_dir = _gallery(gallery_zip, limits, out)
        from vlalign import reid

        try:
            gallery = reid.gallery_images(gallery_dir)
        except (ValueError, FileNotFoundError) as e:
            raise InputError("The gallery zip holds no images (PNG, JPEG, BMP expected).") from e
        for p in gallery:
            check_image(p, limits, f"gallery image {Path(p).name}")
        start = time.perf_counter()
        with cache.lock(folder):
            model = _load(cache, folder)
            ranked = reid.search(model, str(query_path), gallery, topk=int(topk))
        took = time.perf_counter() - start
    except InputError as e:
        return None, f"⚠️ {e}"
    sheet = reid.contact_sheet(str(query_path), ranked)
    return sheet, (f"✅ {len(gallery)} gallery images ranked in {took:.2f} s with `{Path(folder).as_posix()}`; "
                   f"best match {Path(ranked[0][0]).name.split('_', 1)[-1]} (similarity {ranked[0][1]:.3f}).")


def describe(task_folders: dict[str, list[str]]) -> dict[str, Any]:
    """Per task: whether a model exists and the text to show when none does."""
    return {task: {"available": bool(folders), "message": no_model_message(task)}
            for task, folders in task_folders.items()}
