"""Optimizer with weight-decay-free groups for norms, biases and position tables, and the AMP pieces."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from vlalign.engine.config import TrainConfig

# Name fragments of parameters that hold positions rather than weights: Swin's relative bias tables,
# deformable attention's level embeddings. Tokens are matched whole ("pos" in "pos_embed" or "query_pos",
# not in "transposed").
NO_DECAY_SUBSTRINGS = ("relative_position_bias_table", "level_embed")
NO_DECAY_TOKENS = {"pos", "position", "positional"}


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """True for parameters weight decay should leave alone: 1-D (norm scales, biases) and position tables."""
    if param.ndim <= 1 or name.endswith(".bias") or name == "bias":
        return True
    if any(s in name for s in NO_DECAY_SUBSTRINGS):
        return True
    tokens = set(name.replace(".", "_").split("_"))
    return bool(tokens & NO_DECAY_TOKENS)


def build_param_groups(
    model: nn.Module, weight_decay: float, lr: float, groups: Iterable[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Split trainable parameters into optimizer groups, each halved into decay / no-decay.

    Args:
        model: the module being trained (its parameter names drive the no-decay rule).
        weight_decay: decay of the "decay" halves.
        lr: base learning rate; a group's lr is `lr * lr_mult`.
        groups: optional caller groups, e.g. `[{"params": model.backbone.parameters(), "lr_mult": 0.1,
            "name": "backbone"}]`. Parameters in no caller group form a "default" group with lr_mult 1.

    Returns:
        Param-group dicts with keys params, lr, lr_mult, weight_decay, name ("<group>/decay|no_decay").
    """
    names = {id(p): n for n, p in model.named_parameters()}
    claimed: set[int] = set()
    specs: list[tuple[str, float, list[torch.Tensor]]] = []
    for i, group in enumerate(groups or []):
        params = [p for p in group["params"] if p.requires_grad]
        for p in params:
            if id(p) not in names:
                raise ValueError(f"param group {i} holds a parameter that is not in the model")
            if id(p) in claimed:
                raise ValueError(f"parameter {names[id(p)]} appears in two param groups")
            claimed.add(id(p))
        specs.append((group.get("name", f"group{i}"), float(group.get("lr_mult", 1.0)), params))
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in claimed]
    specs.append(("default", 1.0, rest))

    out = []
    for name, mult, params in specs:
        halves = {"decay": [], "no_decay": []}
        for p in params:
            halves["no_decay" if no_weight_decay(names[id(p)], p) else "decay"].append(p)
        for half, members in halves.items():
            if members:
                out.append({
                    "params": members,
                    "lr": lr * mult,
                    "lr_mult": mult,
                    "weight_decay": weight_decay if half == "decay" else 0.0,
                    "name": f"{name}/{half}",
                })
    if not out:
        raise ValueError("the model has no trainable parameter")
    return out


def _adamw(groups: list[dict[str, Any]], config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


def _sgd(groups: list[dict[str, Any]], config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)


OPTIMIZERS: dict[str, Callable[[list[dict[str, Any]], TrainConfig], torch.optim.Optimizer]] = {
    "adamw": _adamw,
    "sgd": _sgd,
}


def build_optimizer(
    model: nn.Module, config: TrainConfig, groups: Iterable[dict[str, Any]] | None = None
) -> torch.optim.Optimizer:
    """AdamW or SGD (momentum) over `build_param_groups`; each group's weight decay is set per group."""
    param_groups = build_param_groups(model, config.weight_decay, config.lr, groups)
    return OPTIMIZERS[config.optimizer](param_groups, config)


_AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_amp(amp: str, device: torch.device) -> tuple[Callable[[], contextlib.AbstractContextManager],
                                                       torch.amp.GradScaler]:
    """Autocast context factory and GradScaler for an AMP mode; disabled modes are pass-throughs.

    fp16 needs loss scaling, which PyTorch provides for CUDA; bf16 keeps fp32's exponent range and needs none.
    """
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(
            f"amp='fp16' needs a CUDA device (GradScaler loss scaling), but training runs on {device}; "
            "use amp='bf16' or amp='none' on CPU"
        )
    dtype = _AMP_DTYPES[amp]

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    return autocast, scaler
