"""Model folders that are one thing to share: `config.json` + `model.safetensors` (+ `text/`, the tokenizer and
text-encoder config), following the Hugging Face Hub layout.

    save_pretrained(model, "runs/af/model")
    model = from_pretrained("runs/af/model")

`from_pretrained` rebuilds the architecture from the stored config without reading any pretrained backbone
or text weights, then loads every tensor strictly from the folder's safetensors.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_model

import vlalign
from vlalign.models.loading import load_strict

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TEXT_DIR = "text"


def model_builders() -> dict[str, Callable[..., torch.nn.Module]]:
    """Every model name -> builder, one flat dict (imported here, not registered by side effects)."""
    from vlalign.models.alignformer import ALIGNFORMER_BUILDERS
    from vlalign.models.efn import EFN_BUILDERS
    from vlalign.models.reid import REID_BUILDERS
    from vlalign.models.rvos import RVOS_BUILDERS

    return {**ALIGNFORMER_BUILDERS, **EFN_BUILDERS, **RVOS_BUILDERS, **REID_BUILDERS}


def build_model(name: str, /, **overrides) -> torch.nn.Module:
    builders = model_builders()
    if name not in builders:
        raise ValueError(f"unknown model {name!r}; available: {sorted(builders)}")
    return builders[name](**overrides)


def save_pretrained(model: torch.nn.Module, path: str | os.PathLike, card: dict | None = None) -> Path:
    """Write the model folder atomically (a temporary folder renamed into place), with its model card.

    `card`: what the card says beyond the config (data, protocol, metrics, training, dataset, license); by
    default the model's `card_info` attribute, which `vlalign.refseg.train_refseg` sets (vlalign/hub.py).
    """
    from vlalign.hub import render_model_card

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp", dir=path.parent))
    try:
        config = dataclasses.asdict(model.config)
        card = {"parameters": sum(p.numel() for p in model.parameters()),
                **(getattr(model, "card_info", None) or {}), **(card or {})}
        meta = {"architecture": model.config.name, "vlalign_version": vlalign.__version__, "config": config,
                "card": card}
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2, default=str))
        (tmp / "README.md").write_text(render_model_card(meta))
        save_text = getattr(getattr(model, "text_encoder", None), "save_config", None)
        if save_text is not None:  # a transformers text tower: its config and tokenizer (CLIP towers have none)
            save_text(tmp / TEXT_DIR)
        save_model(model, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        if path.exists():
            old = path.with_name(f".{path.name}.old{os.getpid()}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def read_config(path: str | os.PathLike) -> dict:
    config_path = Path(path) / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"not a vlalign model folder: {config_path} is missing")
    try:
        meta = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_path}: not valid JSON ({e})") from e
    for key in ("architecture", "config"):
        if key not in meta:
            raise ValueError(f"{config_path}: missing field {key!r}")
    return meta


def from_pretrained(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild and load a model folder written by `save_pretrained`, or a Hub id `user/name[@revision]`
    (downloaded with huggingface_hub, or read from its cache under HF_HUB_OFFLINE=1: vlalign/hub.py)."""
    from vlalign.hub import resolve_model_dir

    path = resolve_model_dir(path)
    meta = read_config(path)
    config = dict(meta["config"])
    name = meta["architecture"]
    config.update(text_dir=str(path / TEXT_DIR), pretrained_text=False, pretrained_backbone=False)
    model = build_model(name, **config)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing")
    # a model class may name keys that older folders lack (LOAD_TOLERATED: key pattern -> why)
    load_strict(model, load_file(str(weights)), tolerated=getattr(model, "LOAD_TOLERATED", None), source=str(weights))
    return model.to(map_location).eval()
