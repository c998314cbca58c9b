"""Atomic training checkpoints: `<out_dir>/checkpoints/iter_<N>/` plus a `latest` pointer file.

Each checkpoint folder holds
- `model.safetensors`: the weights (tied/shared tensors stored once, restored by `load_model`);
- `train_state.pt`: optimizer, scheduler, GradScaler, position (iteration, epoch, iteration in epoch) and the
  RNG states of every rank; plain tensors/ints/tuples only, read with `torch.load(weights_only=True)`;
- `config.json`: `{"train": TrainConfig, "model": model.config (when a dataclass), "model_class": ...}`.

A checkpoint is written into `checkpoints/.tmp-iter_<N>-<pid>/`, every file fsync'd, then renamed into
place; only then is `latest` (a one-line text file) replaced through a temporary file and os.replace. A crash
at any point leaves `latest` on a complete checkpoint; leftover `.tmp-*` folders are ignored and swept by the
next save.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

from vlalign.models.loading import tolerance_reason

MODEL_FILE, STATE_FILE, CONFIG_FILE = "model.safetensors", "train_state.pt", "config.json"
LATEST = "latest"
_ITER_DIR = re.compile(r"^iter_(\d+)$")


def checkpoint_root(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / "checkpoints"


def checkpoint_dir(out_dir: str | os.PathLike, iteration: int) -> Path:
    # Zero-padded so that a directory listing sorts checkpoints in training order.
    return checkpoint_root(out_dir) / f"iter_{iteration:08d}"


def _fsync(path: Path) -> None:
    # Directories too: a rename is durable only once its parent directory's entry is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict[str, Any]:
    """This process's python/numpy/torch/cuda RNG states, in types `torch.load(weights_only=True)` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        # numpy's MT19937 key is a uint32 array: kept as an int64 tensor so no numpy object is pickled.
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `rng_state` (CUDA states are restored only when CUDA is available)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def config_dict(train_config: Any, model: nn.Module) -> dict[str, Any]:
    """What `config.json` holds: the training config and, when it is a dataclass, the model's config."""
    out: dict[str, Any] = {"train": dataclasses.asdict(train_config)}
    model_config = getattr(model, "config", None)
    if dataclasses.is_dataclass(model_config) and not isinstance(model_config, type):
        out["model"] = dataclasses.asdict(model_config)
        out["model_class"] = f"{type(model).__module__}.{type(model).__qualname__}"
    return out


def save_checkpoint(out_dir: str | os.PathLike, iteration: int, model: nn.Module, state: dict[str, Any],
                    config: dict[str, Any], keep_last: int = 0) -> Path:
    """Write `iter_<iteration>` atomically, point `latest` at it, keep the newest `keep_last` (0 = all).

    Call on one process only (rank 0). An existing `iter_<iteration>` is complete by construction (it was
    renamed into place) and is kept as it is.
    """
    final = checkpoint_dir(out_dir, iteration)
    root, name = final.parent, final.name
    root.mkdir(parents=True, exist_ok=True)
    if not final.exists():
        tmp = root / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        safetensors.torch.save_model(model, str(tmp / MODEL_FILE))
        torch.save(state, tmp / STATE_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        for path in (tmp / MODEL_FILE, tmp / STATE_FILE, tmp / CONFIG_FILE, tmp):
            _fsync(path)
        os.rename(tmp, final)
        _fsync(root)
    _write_latest(root, name)
    _prune(root, keep_last, keep=name)
    return final


def _write_latest(root: Path, name: str) -> None:
    tmp = root / f".tmp-{LATEST}-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / LATEST)
    _fsync(root)


def _prune(root: Path, keep_last: int, keep: str) -> None:
    """Delete old checkpoints beyond `keep_last`, never `keep`, and sweep temporaries of crashed writes."""
    for tmp in root.glob(".tmp-*"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    if keep_last <= 0:
        return
    done = sorted((p for p in root.iterdir() if _ITER_DIR.match(p.name)), key=lambda p: int(p.name[5:]))
    for old in done[:-keep_last]:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The folder `latest` points at, or None when no checkpoint was ever completed."""
    root = checkpoint_root(out_dir)
    try:
        name = (root / LATEST).read_text().strip()
    except FileNotFoundError:
        return None
    path = root / name
    missing = [f for f in (MODEL_FILE, STATE_FILE, CONFIG_FILE) if not (path / f).is_file()]
    if not _ITER_DIR.match(name) or missing:
        raise RuntimeError(f"{root / LATEST} points at {name!r}, which is not a complete checkpoint "
                           f"(missing {missing}); was it edited or deleted by hand?")
    return path


def load_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, scaler: torch.amp.GradScaler | None = None) -> dict[str, Any]:
    """Load weights (strict) and, when given, optimizer/scheduler/scaler states; returns the train state."""
    path = Path(path)
    device = next(model.parameters()).device
    missing, unexpected = safetensors.torch.load_model(model, path / MODEL_FILE, strict=False,
                                                       device=str(device))
    tolerated = getattr(model, "LOAD_TOLERATED", None)  # the model's named exceptions, as from_pretrained
    missing = [k for k in missing if tolerance_reason(k, tolerated) is None]
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {path} does not match the model: missing {missing}, "
                           f"unexpected {unexpected}")
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    for obj, key in ((optimizer, "optimizer"), (scheduler, "scheduler"), (scaler, "scaler")):
        if obj is not None:
            obj.load_state_dict(state[key])
    return state
