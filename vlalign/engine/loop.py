"""`train()`: the one training loop every model shares, in the spirit of detectron2's plain_train_net.

Batches are dicts. The entries whose key names a parameter of `model.forward` are passed as keyword arguments
(tensors moved to the device); the others (sentences, ids, transform parameters) stay in the data pipeline.
A forward with `**kwargs` receives every entry. The model returns a dict; the loss is the sum of its `loss_*`
entries, and every `loss_*` is logged (averaged over the log window and over ranks).

One iteration = one optimizer step over a GLOBAL batch of `config.batch_size` samples: every process runs
`grad_accum` micro-batches (gradient all-reduce only on the last, via DDP's no_sync), then clip, step, and
advance the per-iteration schedule (and the weight average, when `ema_decay` asks for one: the run then
returns the averaged weights). Run under torchrun for several processes (see `vlalign.engine.dist`).

`resume=True` continues bit-exactly from `<out_dir>/checkpoints/latest` (weights, optimizer, schedule, data
position, every rank's RNG); a run with `resume=False` refuses an out_dir that already holds checkpoints.
Exactness of random augmentations inside DataLoader workers needs the dataset to draw them from
(seed, epoch, index), as ReferDataset does: worker seeds are fixed per (seed, epoch, rank), not per sample.
"""

from __future__ import annotations

import contextlib
import inspect
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from vlalign.engine import dist
from vlalign.engine.checkpoint import (
    checkpoint_dir,
    config_dict,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from vlalign.engine.config import TrainConfig
from vlalign.engine.ema import WeightEMA
from vlalign.engine.logging import MetricLogger
from vlalign.engine.optim import build_amp, build_optimizer
from vlalign.engine.sampler import ResumableBatchSampler
from vlalign.engine.schedule import build_scheduler, lr_factor


@dataclass
class Position:
    """Where the run is: optimizer steps done, current epoch, steps done within that epoch."""

    iteration: int = 0
    epoch: int = 0
    iter_in_epoch: int = 0


def train(model: nn.Module, train_set: Dataset, config: TrainConfig, collate_fn: Callable | None = None,
          evaluate: Callable[[nn.Module], dict] | None = None,
          param_groups: list[dict[str, Any]] | None = None,
          sampler_factory: Callable[..., ResumableBatchSampler] | None = None) -> dict[str, Any]:
    """Train `model` on `train_set`; returns a summary (iteration, epoch, losses, eval, checkpoint, seconds).

    Args:
        model: returns a dict with `loss_*` scalars when called with the batch's matching entries.
        train_set: map-style dataset of dicts; its `set_epoch(epoch)` is called each epoch when present.
        config: every option (see TrainConfig).
        collate_fn: DataLoader collate (default: torch's default_collate).
        evaluate: `evaluate(model) -> {metric: value}`, called on every rank with the unwrapped model in eval
            mode under no_grad, every `eval_every` iterations and at the end; rank 0 logs the metrics.
        param_groups: optional groups with an `lr_mult` (see `build_param_groups`).
        sampler_factory: builds the batch sampler from ResumableBatchSampler's arguments (dataset,
            batch_per_process, world_size, rank, grad_accum, seed, drop_last); default ResumableBatchSampler.
            A subclass that overrides `epoch_order` (e.g. identity-balanced PK batches) stays resumable.
    """
    info = dist.setup(config.device)
    try:
        return _train(model, train_set, config, collate_fn, evaluate, param_groups, info,
                      sampler_factory or ResumableBatchSampler)
    finally:
        dist.cleanup(info)


def _train(model, train_set, config, collate_fn, evaluate, param_groups, info, sampler_factory) -> dict[str, Any]:
    start_time = time.perf_counter()
    _seed_everything(config.seed + info.rank)  # different per rank: dropout/augmentation differ across ranks
    sampler = sampler_factory(train_set, config.per_process_batch(info.world_size), info.world_size,
                              info.rank, config.grad_accum, config.seed, config.drop_last)
    total = config.max_iters or config.epochs * sampler.iters_per_epoch
    model.to(info.device).train()
    optimizer = build_optimizer(model, config, param_groups)
    scheduler = build_scheduler(optimizer, config, total)
    autocast, scaler = build_amp(config.amp, info.device)
    ema = WeightEMA(model, config.ema_decay) if config.ema_decay else None  # every rank: the same average
    pos = _resume(config, model, optimizer, scheduler, scaler, ema, info, len(train_set))
    ddp_model = _wrap(model, info)
    input_names = _forward_inputs(model)
    logger = MetricLogger(config.out_dir, info.is_main, total, pos.iteration, config.tensorboard)
    lr_at = lr_factor(config, total)
    window: list[dict[str, torch.Tensor]] = []  # per-iteration losses since the last log
    step_time, losses = 0.0, {}

    while pos.iteration < total:
        sampler.set_epoch(pos.epoch, pos.iter_in_epoch)  # also dataset.set_epoch, before workers fork
        batches = iter(_loader(train_set, sampler, collate_fn, config, info, pos.epoch))
        for _ in range(min(len(sampler) // config.grad_accum, total - pos.iteration)):
            tic = time.perf_counter()
            micro_batches = [next(batches) for _ in range(config.grad_accum)]
            window.append(_step(ddp_model, micro_batches, input_names, optimizer, scheduler, scaler, autocast,
                                config, info.device))
            if ema is not None:
                ema.update(model)
            step_time += time.perf_counter() - tic
            pos.iteration += 1
            pos.iter_in_epoch += 1
            logger.advance()
            if pos.iteration < total:  # the end of the run logs, evaluates and saves below, once
                if _due(pos.iteration, config.log_every):
                    lr = config.lr * lr_at(pos.iteration - 1)
                    losses = _log_losses(logger, window, step_time, pos, sampler, lr)
                    window, step_time = [], 0.0
                if _due(pos.iteration, config.eval_every):
                    _evaluate(evaluate, model, logger, pos, sampler)
                # after evaluation: the saved RNG state must be the one the next iteration starts from
                if _due(pos.iteration, config.save_every):
                    _save(config, model, optimizer, scheduler, scaler, ema, pos, info, len(train_set))
        if pos.iter_in_epoch == sampler.iters_per_epoch:
            pos.epoch, pos.iter_in_epoch = pos.epoch + 1, 0

    if window:
        losses = _log_losses(logger, window, step_time, pos, sampler, config.lr * lr_at(pos.iteration - 1))
    # the checkpoint keeps the live weights (and the average), so a longer run can continue from it exactly
    checkpoint = _save(config, model, optimizer, scheduler, scaler, ema, pos, info, len(train_set))
    if ema is not None:
        ema.copy_to(model)  # what the run returns, and what the final evaluation scores
    metrics = _evaluate(evaluate, model, logger, pos, sampler)
    logger.close()
    return {"iteration": pos.iteration, "epoch": pos.epoch, "losses": losses, "eval": metrics,
            "checkpoint": str(checkpoint), "seconds": time.perf_counter() - start_time,
            "weights": "average" if ema is not None else "live"}


def _step(model, micro_batches, input_names, optimizer, scheduler, scaler, autocast, config, device):
    """One optimizer step over the micro-batches; returns this process's mean `loss_*` values (detached)."""
    n = len(micro_batches)
    totals: dict[str, torch.Tensor] = {}
    for k, batch in enumerate(micro_batches):
        # Gradients are all-reduced only on the last micro-batch; no_sync must cover backward too.
        with _no_sync(model, k < n - 1):
            with autocast():
                out = model(**_select(batch, input_names, device))
            parts = {name: value for name, value in out.items() if name.startswith("loss_")}
            if not parts:
                raise ValueError(f"the model returned no loss_* entry (keys: {sorted(out)})")
            # Each micro-batch loss is a mean over its samples: dividing by n makes the step's gradient the
            # mean over the global batch (DDP averages over ranks), whatever world_size and grad_accum are.
            scaler.scale(sum(parts.values()) / n).backward()
        for name, value in parts.items():
            totals[name] = totals.get(name, 0.0) + value.detach().float() / n
    _clip(model, optimizer, scaler, config.clip_grad)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return totals


def _clip(model: nn.Module, optimizer, scaler, max_norm: float | None) -> None:
    if max_norm is None:
        return
    scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)


def _no_sync(model: nn.Module, skip_sync: bool) -> contextlib.AbstractContextManager:
    if skip_sync and isinstance(model, DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def _forward_inputs(model: nn.Module) -> set[str] | None:
    """Parameter names of model.forward, or None when it takes **kwargs (then it gets every entry)."""
    params = inspect.signature(model.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def _select(batch: Any, names: set[str] | None, device: torch.device) -> dict[str, Any]:
    if not isinstance(batch, dict):
        raise TypeError(f"train() expects batches that are dicts, got {type(batch).__name__}")
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items() if names is None or k in names}


def _loader(dataset, sampler, collate_fn, config: TrainConfig, info, epoch: int) -> DataLoader:
    # A fresh loader per epoch: non-persistent workers fork after dataset.set_epoch(epoch), so they see it.
    # Its own generator (from seed, epoch, rank) draws the worker seeds, leaving the global torch RNG alone:
    # a run resumed mid-epoch then draws the same random numbers as an uninterrupted one.
    seed = int(np.random.default_rng((config.seed, epoch, info.rank)).integers(2**62))
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=config.num_workers,
                      pin_memory=info.device.type == "cuda", generator=torch.Generator().manual_seed(seed))


def _log_losses(logger, window, step_time, pos, sampler, lr) -> dict[str, float]:
    """Mean of the window's losses over iterations and ranks (a collective: every rank calls it)."""
    names = sorted(window[0])
    per_iter = torch.stack([torch.stack([w[name] for w in window]) for name in names])  # (losses, iters)
    means = dist.all_reduce_mean(per_iter.mean(dim=1)).tolist()
    losses = dict(zip(names, means))
    record = {"iteration": pos.iteration, "epoch": _epochs_done(pos, sampler), "lr": lr,
              "loss": sum(means), **losses, "time_per_iter": step_time / len(window)}
    logger.log(record)
    return losses


def _evaluate(evaluate, model: nn.Module, logger, pos, sampler) -> dict[str, Any]:
    if evaluate is None:
        return {}
    model.eval()
    with torch.no_grad():
        metrics = dict(evaluate(model))
    model.train()
    logger.log({"iteration": pos.iteration, "epoch": _epochs_done(pos, sampler),
                **{f"eval/{k}": v for k, v in metrics.items()}})
    return metrics


def _save(config, model, optimizer, scheduler, scaler, ema, pos, info, dataset_len):
    """Gather every rank's RNG state, write the checkpoint on rank 0, and hold all ranks until it exists."""
    rngs = dist.all_gather_object(rng_state())
    if info.is_main:
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict(), "iteration": pos.iteration, "epoch": pos.epoch,
                 "iter_in_epoch": pos.iter_in_epoch, "data_order": _data_order(config, dataset_len),
                 "rng": rngs, "ema": ema.state_dict() if ema is not None else None}
        save_checkpoint(config.out_dir, pos.iteration, model, state, config_dict(config, model),
                        config.keep_last)
    dist.barrier()
    return checkpoint_dir(config.out_dir, pos.iteration)


def _resume(config, model, optimizer, scheduler, scaler, ema, info, dataset_len) -> Position:
    """Load `latest` when config.resume asks for it; returns the position to continue from."""
    path = latest_checkpoint(config.out_dir)
    if path is not None and not config.resume:
        # A fresh run here would interleave its checkpoints and log with the old run's.
        raise FileExistsError(f"{config.out_dir} already holds a run (checkpoint {path.name}): pass "
                              "resume=True to continue it, or choose another out_dir")
    if path is None:
        if config.resume and info.is_main:
            print(f"resume=True but {config.out_dir} has no checkpoint: starting from scratch", flush=True)
        return Position()
    state = load_checkpoint(path, model, optimizer, scheduler, scaler)
    if state["data_order"] != _data_order(config, dataset_len):
        raise ValueError(f"cannot resume {path} exactly: the data order was {state['data_order']}, "
                         f"now {_data_order(config, dataset_len)}")
    if ema is not None:
        if state.get("ema") is None:
            raise ValueError(f"cannot resume {path} with ema_decay={config.ema_decay}: that run kept no weight "
                             "average")
        ema.load_state_dict(state["ema"], path)
    # A resume on more ranks than were saved keeps the fresh seeding for the new ranks.
    if info.rank < len(state["rng"]):
        set_rng_state(state["rng"][info.rank])
    if info.is_main:
        print(f"resumed from {path} at iteration {state['iteration']}", flush=True)
    return Position(state["iteration"], state["epoch"], state["iter_in_epoch"])


def _data_order(config: TrainConfig, dataset_len: int) -> dict[str, Any]:
    # What fixes the sequence of global batches; world_size and grad_accum do not (see sampler.py).
    return {"seed": config.seed, "batch_size": config.batch_size, "drop_last": config.drop_last,
            "dataset_len": dataset_len}


def _wrap(model: nn.Module, info) -> nn.Module:
    if info.world_size == 1:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def _due(iteration: int, every: int) -> bool:
    return every > 0 and iteration % every == 0


def _epochs_done(pos: Position, sampler: ResumableBatchSampler) -> float:
    return round(pos.epoch + pos.iter_in_epoch / sampler.iters_per_epoch, 4)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
