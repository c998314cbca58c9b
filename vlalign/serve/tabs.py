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

from vlalign.serve.limits import MB, InputError, Limits, check_image, check_upload, check_video, parse_expressions
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


# Browser-playable codecs first: WebM/VP8 plays in every current browser and OpenCV's own FFmpeg writes it;
# mp4v (what `predict_video` writes) plays in few browsers and gradio converts it only where ffmpeg is installed.
VIDEO_CODECS = (("VP80", ".webm"), ("mp4v", ".mp4"))


def overlay_video(segmenter, video_path: str | Path, expressions: list[str], folder: Path, *, threshold: float,
                  max_frames: int) -> tuple[Path, int]:
    """Stream the video through `segmenter` (a VideoSegmenter) and write the frames with every expression's
    mask overlaid (one colour each, as the image tab) to `folder/overlay.webm` (or .mp4, see VIDEO_CODECS);
    -> (path, frames written). `max_frames` bounds the work even where the container's header under-states
    the length (check_video read the header)."""
    from vlalign.video_predictor import predict_video

    try:
        summary = predict_video(video_path, expressions, folder / "overlay", segmenter=segmenter,
                                threshold=threshold, max_frames=max_frames, codecs=VIDEO_CODECS)
    except ValueError as e:  # unreadable video or no codec: the message names the file
        log.warning("video tab: %s", e)
        if "cannot write" in str(e):
            raise InputError("The server's OpenCV cannot write videos (neither VP8 nor MPEG-4); see the server "
                             "log.") from None
        raise InputError(f"{Path(video_path).name} holds no readable frames.") from None
    return Path(summary["out"]), summary["frames"]


def segment_video(cache: PredictorCache, results: ResultDirs, limits: Limits, video_path: str | None,
                  expressions: str | None, folder: str | None, threshold: float = 0.5
                  ) -> tuple[str | None, str]:
    """Referring video segmentation: (overlay video, WebM where OpenCV can write it, else MP4; status)."""
    try:
        folder = _pick(folder, cache, "video")
        fps, frames, seconds = check_video(video_path, limits)
        texts = parse_expressions(expressions, limits)
        start = time.perf_counter()
        with cache.lock(folder):
            segmenter = _load(cache, folder)
            out, frames = overlay_video(segmenter, video_path, texts, results.new(), threshold=float(threshold),
                                        max_frames=limits.max_video_frames)
        took = time.perf_counter() - start
    except InputError as e:
        return None, f"⚠️ {e}"
    return str(out), (f"✅ {frames} frames ({seconds:.1f} s at {fps:.0f} fps), {len(texts)} expression(s) in "
                      f"{took:.1f} s from `{Path(folder).as_posix()}`.")


def _unzip(path: Path, limits: Limits, folder: Path, first: int) -> list[Path]:
    """The files of an uploaded zip, extracted safely into `folder` under flat numbered names."""
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path.name} is not a .zip file that can be read: upload the gallery as one zip "
                         f"archive of images, or the images themselves.")
    try:
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if len(members) > limits.max_gallery_images:
                raise InputError(f"{path.name} holds {len(members)} files; a gallery may hold at most "
                                 f"{limits.max_gallery_images}.")
            # the declared sizes bound what is written: zipfile stops reading a member at its declared size
            if sum(m.file_size for m in members) > 4 * limits.max_upload_mb * MB:
                raise InputError(f"{path.name} is too large once unpacked (more than "
                                 f"{4 * limits.max_upload_mb:g} MB).")
            out = []
            for k, m in enumerate(members, start=first):  # flat, numbered names: no archive path reaches the disk
                target = folder / f"{k:05d}_{Path(m.filename).stem[:40]}{Path(m.filename).suffix.lower()[:6]}"
                with zf.open(m) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                out.append(target)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError) as e:
        # a corrupt member, an unsupported compression method or an encrypted archive
        raise InputError(f"{path.name} cannot be unpacked ({e}).") from e
    return out


def gallery_files(uploads: str | list[str] | None, limits: Limits, out: Path) -> list[str]:
    """The gallery images of an upload: one or more .zip archives and/or the images themselves (a folder's
    images, selected together). Other files are ignored; every image is checked as the query is."""
    from vlalign.data.sysu import IMAGE_SUFFIXES

    uploads = [uploads] if isinstance(uploads, (str, Path)) else list(uploads or [])
    if not uploads:
        raise InputError("Please upload a gallery: a .zip of images, or the images of a folder.")
    folder = out / "gallery"
    folder.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for upload in uploads:
        path = check_upload(upload, "a gallery (a .zip of images, or images)", limits)
        files += _unzip(path, limits, folder, len(files)) if path.suffix.lower() == ".zip" else [path]
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise InputError(f"The gallery holds no images ({', '.join(IMAGE_SUFFIXES)} expected).")
    if len(images) > limits.max_gallery_images:
        raise InputError(f"The gallery holds {len(images)} images; at most {limits.max_gallery_images}.")
    for p in images:
        try:
            check_image(p, limits, f"gallery image {p.name}")
        except InputError as e:
            raise InputError(f"In the gallery: {e}") from e
    return [str(p) for p in images]


def _shown(path: str) -> str:
    # extracted files carry a number in front of their own name (see _unzip)
    name = Path(path).name
    return name.split("_", 1)[1] if name[:5].isdigit() and name[5:6] == "_" else name


def search_reid(cache: PredictorCache, results: ResultDirs, limits: Limits, query_path: str | None,
                gallery: str | list[str] | None, folder: str | None, topk: int = 10
                ) -> tuple[Image.Image | None, str]:
    """Re-identification: (contact sheet of the query and its `topk` nearest gallery images, status with the
    ranked list). `gallery`: uploaded .zip archive(s) and/or image files (see `gallery_files`)."""
    from vlalign import reid

    try:
        folder = _pick(folder, cache, "reid")
        check_image(query_path, limits, "a query image")
        images = gallery_files(gallery, limits, results.new())
        start = time.perf_counter()
        with cache.lock(folder):
            model = _load(cache, folder)
            ranked = reid.search(model, str(query_path), images, topk=max(1, int(topk)))
        took = time.perf_counter() - start
    except InputError as e:
        return None, f"⚠️ {e}"
    sheet = reid.contact_sheet(str(query_path), ranked)
    ranking = "<br>".join(f"{i}. {_shown(p)} (similarity {s:.3f})" for i, (p, s) in enumerate(ranked, start=1))
    return sheet, (f"✅ {len(images)} gallery images ranked in {took:.2f} s with `{Path(folder).as_posix()}`; "
                   f"the {len(ranked)} closest:<br>{ranking}")


def describe(task_folders: dict[str, list[str]]) -> dict[str, Any]:
    """Per task: whether a model exists and the text to show when none does."""
    return {task: {"available": bool(folders), "message": no_model_message(task)}
            for task, folders in task_folders.items()}
