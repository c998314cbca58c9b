"""The web demo (`vlalign serve`): Gradio Blocks with three tabs over the tab handlers of `tabs.py`.

Offline by construction: analytics off before gradio is imported, no share link, no server-side rendering
(which would need Node), the default theme's fonts are served by the app itself (gradio's `LocalFont`) and
nothing else is fetched from outside; `tests/test_serve.py` aborts every non-loopback request in a real
browser and checks that the page still works. Requests go through gradio's queue: `Limits.concurrency` model
calls at once and `Limits.queue_size` waiting, so a burst waits instead of failing.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from pathlib import Path

from vlalign.serve.limits import MB, Limits
from vlalign.serve.models import DEMO_WEIGHTS, PredictorCache, find_model_folders, load_predictor
from vlalign.serve.tabs import ResultDirs, no_model_message, search_reid, segment_image, segment_video

TITLE = "vlalign: align language with vision"


def _gradio():
    # Read when gradio is imported: no usage reports, no version check, nothing sent anywhere.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gradio as gr

    return gr


def default_weights() -> list[str]:
    """The folder `make demo` writes, when it exists (so that `vlalign serve` works with no argument)."""
    return [str(DEMO_WEIGHTS)] if (DEMO_WEIGHTS / "config.json").is_file() else []


def _model_picker(gr, folders: list[str], task: str):
    if folders:
        return gr.Dropdown(folders, value=folders[0], label="model folder", interactive=True)
    gr.Markdown(no_model_message(task), elem_classes="no-model")
    return gr.Dropdown([], value=None, label="model folder", interactive=False)


def build_app(weights: Iterable[str | Path] | None = None, *, models_root: str | Path | None = "runs",
              limits: Limits | None = None, results_dir: str | Path | None = None):
    """The gradio Blocks of the demo (not launched). `weights`: model folders offered first (default: the
    `make demo` folder if present); `models_root`: also offer every model folder found under it."""
    gr = _gradio()
    limits = limits or Limits()
    weights = default_weights() if weights is None else [str(w) for w in weights]
    folders = find_model_folders(weights, [models_root] if models_root else [])
    caches = {task: PredictorCache(found, functools.partial(load_predictor, task)) for task, found in folders.items()}
    results = ResultDirs(results_dir)

    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(f"# {TITLE}\nEverything runs on this machine. Limits: {limits.max_upload_mb:g} MB per file, "
                    f"images up to {limits.max_image_side} px a side, videos up to {limits.max_video_seconds:g} s, "
                    f"{limits.max_expressions} expressions per request.")
        with gr.Tab("Referring image segmentation", id="image"):
            with gr.Row():
                with gr.Column():
                    # A plain file box, not gr.Image: gr.Image opens the upload with PIL before the handler
                    # runs, so a bad or huge file would fail there with gradio's generic error instead of
                    # the limits' own message (limits.check_image).
                    image = gr.File(type="filepath", label="image (PNG, JPEG, WebP, BMP, TIFF)",
                                    elem_id="image-input")
                    texts = gr.Textbox(lines=3, label="expressions (one per line)", elem_id="image-expressions",
                                       placeholder="the man on the left")
                    folder = _model_picker(gr, folders["image"], "image")
                    threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="mask threshold")
                    run = gr.Button("Segment", variant="primary", elem_id="image-run")
                with gr.Column():
                    overlay = gr.Image(type="pil", format="png", label="masks overlaid", interactive=False,
                                       elem_id="image-overlay")
                    files = gr.File(file_count="multiple", label="download the masks (PNG, zip)",
                                    elem_id="image-files")
                    status = gr.Markdown(elem_id="image-status")
            run.click(functools.partial(segment_image, caches["image"], results, limits),
                      [image, texts, folder, threshold], [overlay, files, status], api_name="segment_image")

        with gr.Tab("Referring video segmentation", id="video"):
            with gr.Row():
                with gr.Column():
                    video = gr.Video(sources=["upload"], label="video", elem_id="video-input")
                    vtexts = gr.Textbox(lines=3, label="expressions (one per line)", elem_id="video-expressions",
                                        placeholder="the person walking to the left")
                    vfolder = _model_picker(gr, folders["video"], "video")
                    vthreshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="mask threshold")
                    vrun = gr.Button("Segment the video", variant="primary", elem_id="video-run")
                with gr.Column():
                    voverlay = gr.Video(label="overlay video", interactive=False, elem_id="video-overlay")
                    vstatus = gr.Markdown(elem_id="video-status")
            vrun.click(functools.partial(segment_video, caches["video"], results, limits),
                       [video, vtexts, vfolder, vthreshold], [voverlay, vstatus], api_name="segment_video")

        with gr.Tab("Re-identification", id="reid"):
            with gr.Row():
                with gr.Column():
                    query = gr.File(type="filepath", label="query image (a person crop)", elem_id="reid-query")
                    # a zip, or the images of a folder selected together (a browser uploads files, not folders)
                    gallery = gr.File(file_count="multiple", file_types=[".zip", "image"], type="filepath",
                                      label="gallery: a .zip of images, or the images themselves",
                                      elem_id="reid-gallery")
                    rfolder = _model_picker(gr, folders["reid"], "reid")
                    topk = gr.Slider(1, 50, value=10, step=1, label="top k")
                    rrun = gr.Button("Search", variant="primary", elem_id="reid-run")
                with gr.Column():
                    sheet = gr.Image(type="pil", format="png", label="ranked contact sheet", interactive=False,
                                     elem_id="reid-sheet")
                    rstatus = gr.Markdown(elem_id="reid-status")
            rrun.click(functools.partial(search_reid, caches["reid"], results, limits),
                       [query, gallery, rfolder, topk], [sheet, rstatus], api_name="search_reid")

    # One model call at a time by default (a CPU has nothing to gain from more), the rest wait in the queue.
    app.queue(default_concurrency_limit=limits.concurrency, max_size=limits.queue_size)
    return app


def launch(app, *, host: str = "127.0.0.1", port: int = 7860, limits: Limits | None = None,
           block: bool = True):
    """Serve `app` on host:port (loopback by default), offline, with the upload limit enforced by the server."""
    limits = limits or Limits()
    return app.launch(server_name=host, server_port=port, share=False, inbrowser=False, show_error=False,
                      ssr_mode=False, pwa=False, mcp_server=False, max_file_size=int(limits.max_upload_mb * MB),
                      footer_links=[], enable_monitoring=False, prevent_thread_lock=not block, quiet=False)
