"""The training engine shared by every model: `train()`, checkpoints, schedules, distributed set-up, logging.

    from vlalign.engine import TrainConfig, train
    summary = train(model, dataset, TrainConfig(out_dir="runs/x", max_iters=1000, batch_size=32, lr=5e-5))

See `loop.py` for the batch/forward contract, `checkpoint.py` for the on-disk layout and `dist.py` for
torchrun.
"""

from __future__ import annotations

from vlalign.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from vlalign.engine.config import TrainConfig
from vlalign.engine.ema import WeightEMA, apply_saved_average
from vlalign.engine.loop import train
from vlalign.engine.optim import build_optimizer, build_param_groups, no_weight_decay
from vlalign.engine.sampler import ResumableBatchSampler
from vlalign.engine.schedule import build_scheduler, lr_factor

__all__ = [
    "ResumableBatchSampler",
    "TrainConfig",
    "WeightEMA",
    "apply_saved_average",
    "build_optimizer",
    "build_param_groups",
    "build_scheduler",
    "latest_checkpoint",
    "load_checkpoint",
    "lr_factor",
    "no_weight_decay",
    "save_checkpoint",
    "train",
]
