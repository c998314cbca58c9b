"""`vlalign serve` in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright, with every
request that leaves loopback aborted (no CDN, fonts or analytics may be needed). A real photo and an
expression give a mask overlay; a file that is not an image gives the error message. Plus the limits and the
no-model message without a browser."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch

from vlalign import assets
from vlalign.models.pretrained import build_model, save_pretrained
from vlalign.serve.limits import InputError, Limits, check_image, parse_expressions

CHROMIUM = "/usr/bin/chromium"
TINY = {"input_size": 64, "pixel_dim": 16, "pixel_layers": 1, "pixel_heads": 2, "pixel_ffn_dim": 16,
        "word_ffn_dim": 16, "query_dim": 16, "query_layers": 1, "query_heads": 2, "query_ffn_dim": 16,
        "mask_dim": 8, "pretrained_backbone": False, "pretrained_text": False}
ROOT = Path(__file__).resolve().parents[1]


def test_limits_refuse_with_clear_messages(tmp_path):
    limits = Limits(max_image_side=64, max_expressions=2)
    with pytest.raises(InputError, match="not an image"):
        (tmp_path / "notes.txt").write_text("hello")
        check_image(tmp_path / "notes.txt", limits)
    with pytest.raises(InputError, match="at most 64 pixels|up to 64x64"):
        check_image(assets.skimage_image("astronaut.png"), limits)
    with pytest.raises(InputError, match="at least one expression"):
        parse_expressions(" \n ", limits)
    with pytest.raises(InputError, match="at most 2 per request"):
        parse_expressions("a\nb\nc", limits)
    assert parse_expressions("the dog\n\n the man ", limits) == ["the dog", "the man"]


def test_image_tab_without_a_model_says_how_to_get_one(tmp_path):
    from vlalign.serve.models import PredictorCache
    from vlalign.serve.tabs import ResultDirs, segment_image

    overlay, files, status = segment_image(PredictorCache([], lambda f: None), ResultDirs(tmp_path), Limits(),
                                           str(assets.skimage_image("astronaut.png")), "the man", None)
    assert overlay is None and files is None
    assert "make demo" in status and "runs/demo/model" in status


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(bert_dir, tmp_path_factory):
    torch.manual_seed(0)
    folder = save_pretrained(build_model("alignformer_lite", text_dir=bert_dir, **TINY),
                             tmp_path_factory.mktemp("serve") / "model")
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vlalign.cli", "serve", "--weights", str(folder), "--models-root",
                             "", "--port", str(port), "--threads", "1"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300  # seconds: gradio and torch import slowly on a loaded machine
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"vlalign serve did not start:\n{proc.stdout.read()}")
            time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_browser_upload_photo_gets_mask_and_bad_upload_gets_error(server, tmp_path):
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (scripts/setup.sh does when run as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install 'vlalign[browser-test]'")
    blocked = []

    def only_loopback(route):
        host = urlparse(route.request.url).hostname
        if host in ("127.0.0.1", "localhost") or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            page.route("**/*", only_loopback)
            page.goto(server, wait_until="networkidle")
            page.locator("#image-input input[type=file]").set_input_files(str(assets.skimage_image("astronaut.png")))
            page.locator("#image-expressions textarea").fill("the man in a white suit")
            page.locator("#image-run").click()
            page.locator("#image-overlay img").wait_for(timeout=60_000)
            status = page.locator("#image-status")
            status.get_by_text("mask(s) from").wait_for(timeout=10_000)
            assert "“the man in a white suit”" in status.inner_text()
            assert "mask_1" in page.locator("#image-files").inner_text()  # the masks to download are listed

            bad = tmp_path / "notes.png"  # an image name, not an image
            bad.write_text("this is not an image")
            page.goto(server, wait_until="networkidle")
            page.locator("#image-input input[type=file]").set_input_files(str(bad))
            page.locator("#image-run").click()
            page.get_by_text("is not an image that can be read").wait_for(timeout=30_000)
        finally:
            browser.close()
    assert not blocked, f"the page asked for non-loopback resources: {blocked[:5]}"
