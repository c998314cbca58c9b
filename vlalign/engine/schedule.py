"""Learning-rate schedules stepped once per iteration: linear warm-up times a decay (poly, cosine, step).

The multiplier of iteration i (0-based, the i-th optimizer step) is `warmup(i) * decay(i)`:
- warmup(i) = (i + 1) / warmup_iters for i < warmup_iters, else 1 (the decay keeps running during warm-up,
  as in detectron2's WarmupParamScheduler, so the curve joins the plain decay at the end of warm-up);
- decay: poly (1 - i / T) ** power, cosine 0.5 (1 + cos(pi i / T)), step gamma ** #(milestones <= i),
  constant 1; T = total iterations.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from functools import partial

import torch

from vlalign.engine.config import TrainConfig


def _poly(i: int, total: int, config: TrainConfig) -> float:
    return (1.0 - min(i, total) / total) ** config.poly_power


def _cosine(i: int, total: int, config: TrainConfig) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(i, total) / total))


def _step(i: int, total: int, config: TrainConfig) -> float:
    return config.gamma ** bisect.bisect_right(sorted(config.milestones), i)


def _constant(i: int, total: int, config: TrainConfig) -> float:
    return 1.0


DECAYS = {"poly": _poly, "cosine": _cosine, "step": _step, "constant": _constant}


def _factor(i: int, total: int, config: TrainConfig) -> float:
    warmup = (i + 1) / config.warmup_iters if i < config.warmup_iters else 1.0
    return warmup * DECAYS[config.schedule](i, total, config)


def lr_factor(config: TrainConfig, total_iters: int) -> Callable[[int], float]:
    """The multiplier of the base lr at iteration i (0-based), as a picklable function of i."""
    if total_iters < 1:
        raise ValueError(f"total_iters must be >= 1, got {total_iters}")
    return partial(_factor, total=total_iters, config=config)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_iters: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over every param group (each keeps its lr_mult in its base lr); step() per iteration."""
    factor = lr_factor(config, total_iters)
    # A plain function (not a callable object) so LambdaLR.state_dict() stores only counters:
    # the schedule itself is rebuilt from the config on resume.
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: factor(i))
