"""TrainConfig: every option of the shared training loop, one typed dataclass stored in each checkpoint."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("poly", "cosine", "step", "constant")
AMP_MODES = ("none", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    """Options of `vlalign.engine.train`.

    Iterations count optimizer steps. `batch_size` is the GLOBAL batch of one iteration: each process runs
    `grad_accum` micro-batches of `batch_size // (world_size * grad_accum)` samples.

    Attributes:
        out_dir: run folder: `metrics.jsonl`, `checkpoints/iter_<N>/`, `checkpoints/latest`.
        max_iters: length of the run in iterations; exactly one of `max_iters` / `epochs` is set.
        epochs: length of the run in epochs (turned into iterations with the epoch length).
        batch_size: global batch per iteration (all processes, all accumulation steps).
        grad_accum: micro-batches per process per iteration.
        drop_last: True drops the tail of each epoch's permutation that does not fill a global batch;
            False pads it with the permutation's first indices (a few samples seen twice per epoch).
        lr: base learning rate; a param group with `lr_mult` m trains at `m * lr`.
        weight_decay: decay of weight matrices; norms, biases and position tables get none.
        optimizer: "adamw" (uses `betas`) or "sgd" (uses `momentum`).
        schedule: per-iteration decay after warm-up: "poly" (power `poly_power`), "cosine" (to 0), "step"
            (x `gamma` at each of `milestones`, in iterations) or "constant".
        warmup_iters: linear warm-up: iteration i < warmup_iters runs at (i + 1) / warmup_iters of the decay.
        clip_grad: max global gradient norm; None disables clipping.
        ema_decay: 0 = off; otherwise keep a moving average of the trained weights (`WeightEMA`, horizon about
            1 / (1 - ema_decay) iterations), saved in every checkpoint; the run ends with the model holding it.
        amp: "none", "bf16" (autocast, CPU or GPU) or "fp16" (autocast + GradScaler, GPU only).
        eval_every / save_every / log_every: periods in iterations (0 = only at the end; logging: never
            periodic). The end of the run always evaluates, saves and logs.
        keep_last: number of checkpoints kept (0 keeps all).
        seed: seeds python/numpy/torch (offset by rank) and the data order.
        num_workers: DataLoader worker processes per training process.
        device: "auto" (cuda:LOCAL_RANK when CUDA is available, else cpu), "cpu" or "cuda".
        resume: continue from `out_dir/checkpoints/latest` when it exists.
        tensorboard: also write TensorBoard scalars (needs the `tensorboard` package).
    """

    out_dir: str
    max_iters: int | None = None
    epochs: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    drop_last: bool = True
    lr: float = 1e-4
    weight_decay: float = 0.01
    optimizer: str = "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    schedule: str = "poly"
    poly_power: float = 0.9
    milestones: tuple[int, ...] = field(default_factory=tuple)
    gamma: float = 0.1
    warmup_iters: int = 0
    clip_grad: float | None = None
    ema_decay: float = 0.0
    amp: str = "none"
    eval_every: int = 0
    save_every: int = 0
    keep_last: int = 2
    log_every: int = 20
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    resume: bool = False
    tensorboard: bool = False

    def __post_init__(self) -> None:
        # JSON turns tuples into lists; normalise so that a config read back compares equal.
        self.betas = tuple(self.betas)
        self.milestones = tuple(self.milestones)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("amp", self.amp, AMP_MODES)
        _check_choice("device", self.device, DEVICES)
        if (self.max_iters is None) == (self.epochs is None):
            raise ValueError("TrainConfig: set exactly one of max_iters and epochs")
        for name in ("batch_size", "grad_accum", "max_iters", "epochs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {value}")
        for name in ("warmup_iters", "eval_every", "save_every", "keep_last", "log_every", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"TrainConfig.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")

    def per_process_batch(self, world_size: int) -> int:
        """Samples in one micro-batch of one process; raises if the global batch does not split evenly."""
        parts = world_size * self.grad_accum
        if self.batch_size % parts:
            raise ValueError(
                f"global batch_size {self.batch_size} is not divisible by world_size x grad_accum = "
                f"{world_size} x {self.grad_accum}"
            )
        return self.batch_size // parts

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text))


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"TrainConfig.{name} must be one of {choices}, got {value!r}")
