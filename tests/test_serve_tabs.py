"""The video and re-id tabs of `vlalign serve`, called directly (no gradio, no browser) with tiny random model
folders written by save_pretrained: an overlay video comes back for a short video, a ranked contact sheet for
a query and a gallery (a folder's images or a zip), and refused requests say why in the status."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from vlalign.models.pretrained import build_model, save_pretrained
from vlalign.serve.limits import Limits
from vlalign.serve.models import PredictorCache, find_model_folders, load_predictor
from vlalign.serve.tabs import ResultDirs, search_reid, segment_video

cv2 = pytest.importorskip("cv2")
pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

VIDEO_TINY = {"input_size": 32, "num_frames": 3, "decoder_dim": 16, "lmdf_groups": 4, "pretrained_backbone": False,
              "pretrained_text": False, "backbone": "resnet",
              "backbone_kwargs": {"depths": [1, 1, 1, 1], "planes": [4, 8, 16, 32], "stem_channels": 8}}
REID_TINY = {"num_ids": 4, "pretrained_backbone": False, "pretrained_text": False, "image_size": (32, 16),
             "embed_dim": 16}


def _cache(folder, task: str) -> tuple[PredictorCache, str]:
    found = find_model_folders([folder])[task]  # the folder is offered for this task (architecture prefix)
    assert found == [str(folder)]
    return PredictorCache(found, lambda f: load_predictor(task, f)), str(folder)


@pytest.fixture(scope="module")
def video_model(bert_dir, tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("twostream_r101", text_dir=bert_dir, **VIDEO_TINY)
    return _cache(save_pretrained(model, tmp_path_factory.mktemp("video") / "model"), "video")


@pytest.fixture(scope="module")
def reid_model(bert_dir, tmp_path_factory):
    from vlalign.models.reid import clip4vireid_lite

    torch.manual_seed(0)
    model = clip4vireid_lite(text_dir=bert_dir, **REID_TINY)
    return _cache(save_pretrained(model, tmp_path_factory.mktemp("reid") / "model"), "reid")


def write_video(path, frames: int = 8, fps: float = 10.0, size=(48, 40)):
    """A short MPEG-4 video (W x H = size): a bright square moving right on a dark ground."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for t in range(frames):
        frame = np.full((size[1], size[0], 3), 30, np.uint8)
        frame[10:26, 4 + 3 * t:20 + 3 * t] = 220
        writer.write(frame)
    writer.release()
    return str(path)


def read_frames(path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def test_video_tab_returns_an_overlay_video_of_every_frame(video_model, tmp_path):
    cache, folder = video_model
    video = write_video(tmp_path / "clip.mp4", frames=8, size=(48, 40))
    out, status = segment_video(cache, ResultDirs(tmp_path / "results"), Limits(), video,
                                "the white square\nthe man on the left", folder, 0.5)
    assert out is not None, status
    assert status.startswith("✅ 8 frames") and "2 expression(s)" in status
    frames = read_frames(out)
    assert len(frames) == 8 and frames[0].shape == (40, 48, 3)  # every frame, at the video's own size
    assert out.endswith(".webm")  # a codec browsers play without a server-side ffmpeg


def test_video_tab_refuses_too_long_videos_and_non_videos(video_model, tmp_path):
    cache, folder = video_model
    results = ResultDirs(tmp_path / "results")
    video = write_video(tmp_path / "long.mp4", frames=12, fps=10.0)
    out, status = segment_video(cache, results, Limits(max_video_seconds=0.5), video, "the square", folder)
    assert out is None and "long.mp4 is 1.2 s (12 frames)" in status and "limit is 0.5 s" in status
    out, status = segment_video(cache, results, Limits(max_video_frames=5), video, "the square", folder)
    assert out is None and "and 5 frames" in status and "trim" in status
    (tmp_path / "notes.mp4").write_text("not a video")
    out, status = segment_video(cache, results, Limits(), str(tmp_path / "notes.mp4"), "the square", folder)
    assert out is None and "notes.mp4 is not a video that can be read" in status
    out, status = segment_video(cache, results, Limits(), video, " \n ", folder)
    assert out is None and "at least one expression" in status
    out, status = segment_video(PredictorCache([], lambda f: None), results, Limits(), video, "the square", None)
    assert out is None and "No trained model" in status and "rvos train" in status


def _person(rng, path, size=(16, 32)):
    """A random 'person crop' (W x H = size), saved as PNG."""
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def gallery(tmp_path):
    """A folder of five images, one of which is the query itself; and a zip of the same folder."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "gallery"
    folder.mkdir()
    paths = [_person(rng, folder / f"person_{k}.png") for k in range(5)]
    query = tmp_path / "query.png"
    query.write_bytes(paths[3].read_bytes())
    archive = tmp_path / "gallery.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in paths:
            zf.write(p, f"cam1/{p.name}")  # a sub-folder inside the archive, as people zip folders
        zf.writestr("notes.txt", "ignored: not an image")
    return query, [str(p) for p in paths], archive


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
def test_reid_tab_ranks_the_query_itself_first(reid_model, gallery, tmp_path, as_zip):
    cache, folder = reid_model
    query, paths, archive = gallery
    sheet, status = search_reid(cache, ResultDirs(tmp_path / "results"), Limits(), str(query),
                                str(archive) if as_zip else paths, folder, 3)
    assert sheet is not None, status
    assert status.startswith("✅ 5 gallery images") and "the 3 closest" in status
    ranking = status.split("<br>")[1:]
    assert len(ranking) == 3
    assert ranking[0].startswith("1. person_3.png (similarity 1.000)")  # the same picture: cosine 1
    assert all("similarity 1.000" not in line for line in ranking[1:])  # random crops differ
    assert sheet.width >= 4 * 64 > sheet.height  # the query and 3 ranked tiles (64 px wide each) in a row


def test_reid_tab_refuses_bad_zips_and_empty_galleries(reid_model, gallery, tmp_path):
    cache, folder = reid_model
    query, paths, _ = gallery
    results = ResultDirs(tmp_path / "results")
    fake = tmp_path / "fake.zip"
    fake.write_text("not a zip")
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "no images here")
    crowded = tmp_path / "crowded.zip"
    with zipfile.ZipFile(crowded, "w") as zf:
        for k in range(4):
            zf.writestr(f"{k}.png", b"")
    cases = [
        (str(fake), Limits(), "fake.zip is not a .zip file"),
        (str(empty), Limits(), "holds no images"),
        ([], Limits(), "Please upload a gallery"),
        (str(crowded), Limits(max_gallery_images=3), "crowded.zip holds 4 files; a gallery may hold at most 3"),
        (paths, Limits(max_gallery_images=3), "holds 5 images; at most 3"),
    ]
    for upload, limits, message in cases:
        sheet, status = search_reid(cache, results, limits, str(query), upload, folder, 3)
        assert sheet is None and message in status, (message, status)
    (tmp_path / "broken.png").write_text("not an image")
    sheet, status = search_reid(cache, results, Limits(), str(query), [*paths, str(tmp_path / "broken.png")],
                                folder, 3)
    assert sheet is None and "In the gallery: broken.png is not an image" in status
    sheet, status = search_reid(cache, results, Limits(), None, paths, folder, 3)
    assert sheet is None and "Please upload a query image" in status
