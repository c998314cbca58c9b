"""`WeightEMA`: an exponential moving average of the weights a run trains (Polyak averaging).

After step t the average moves towards the live weights w_t:

    avg_t = avg_{t-1} + a_t * (w_t - avg_{t-1}),    a_t = (1 - decay) / (1 - decay ** t)

which is the bias-corrected average (as Adam corrects its moments): avg_t weighs w_1 .. w_t by decay ** (t - s),
normalised, from the first step on (a_1 = 1: the starting weights do not linger), so the horizon is about
1 / (1 - decay) steps however long the run. Averaged: every parameter that trains when the average is
created, and every floating-point buffer (BatchNorm running statistics). Frozen parameters and integer
buffers stay as the live model has them.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn


class WeightEMA:
    """The moving average of `model`'s trained weights; `update` after each optimizer step."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the EMA decay must be in (0, 1), got {decay}")
        self.decay, self.updates = decay, 0
        state = model.state_dict()
        averaged = {n for n, p in model.named_parameters() if p.requires_grad}
        averaged |= {n for n, b in model.named_buffers() if b.dtype.is_floating_point}
        # state_dict order and names (non-persistent buffers are not in it, so they are not averaged)
        self.shadow = {n: v.detach().clone() for n, v in state.items() if n in averaged}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        step = (1.0 - self.decay) / (1.0 - self.decay ** self.updates)
        state = model.state_dict()
        for name, avg in self.shadow.items():
            avg.lerp_(state[name].detach(), step)

    def copy_to(self, model: nn.Module) -> None:
        """Put the averaged weights into `model` (in place; the live weights are lost)."""
        _copy_into(model, self.shadow)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any], source: str | os.PathLike = "checkpoint") -> None:
        if set(state["shadow"]) != set(self.shadow):
            raise ValueError(f"{source}: its weight average covers other tensors than this model trains "
                             f"(only saved: {sorted(set(state['shadow']) - set(self.shadow))[:5]}; only here: "
                             f"{sorted(set(self.shadow) - set(state['shadow']))[:5]})")
        if state["decay"] != self.decay:  # the resumed average would not be the one an unbroken run keeps
            raise ValueError(f"{source}: its weight average has decay {state['decay']}, this run asks for "
                             f"{self.decay}")
        self.updates = state["updates"]
        for name, avg in self.shadow.items():
            avg.copy_(state["shadow"][name])


def apply_saved_average(state: dict[str, Any], model: nn.Module) -> bool:
    """Copy a checkpoint's weight average (its `train_state["ema"]`) into `model`; False when it has none."""
    if state.get("ema") is None:
        return False
    _copy_into(model, state["ema"]["shadow"])
    return True


@torch.no_grad()
def _copy_into(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    live = model.state_dict()
    for name, value in tensors.items():
        live[name].copy_(value)
