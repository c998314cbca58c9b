"""A toy model, dataset and training script for the engine tests; also runs under torchrun.

    python tests/engine_toy.py --out /tmp/run --max-iters 12
    python -m torch.distributed.run --nproc_per_node 2 tests/engine_toy.py --out /tmp/run2

The model is deterministic (no dropout, no BatchNorm), so runs can be compared bit for bit. Setting
VLALIGN_TOY_SLEEP=<seconds> makes every forward sleep, which gives a test time to kill the run mid-way.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path from a subprocess

from vlalign.engine import TrainConfig, train  # noqa: E402


@dataclass
class ToyConfig:
    dim: int = 4
    hidden: int = 16


class ToyModel(nn.Module):
    """x (Bx4) -> y (B): Linear, tanh, LayerNorm, Linear; two named losses when y is given."""

    def __init__(self, config: ToyConfig, jitter: float = 0.0) -> None:
        super().__init__()
        self.jitter = jitter  # std of training-time input noise drawn from torch's global RNG
        self.config = config
        self.fc1 = nn.Linear(config.dim, config.hidden)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.hidden))  # a position table: exempt from decay
        self.norm = nn.LayerNorm(config.hidden)
        self.fc2 = nn.Linear(config.hidden, 1)
        self.delay = float(os.environ.get("VLALIGN_TOY_SLEEP", "0"))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if self.delay:
            time.sleep(self.delay)
        if self.training and self.jitter:
            x = x + self.jitter * torch.randn_like(x)
        pred = self.fc2(self.norm(torch.tanh(self.fc1(x) + self.pos_embed))).squeeze(-1)  # (B,)
        out = {"pred": pred}
        if y is not None:
            out["loss_mse"] = F.mse_loss(pred.float(), y)
            out["loss_l1"] = 0.1 * (pred.float() - y).abs().mean()
        return out


class ToyDataset(Dataset):
    """Linear targets plus noise drawn from (epoch, index), as ReferDataset draws a sentence per epoch."""

    def __init__(self, n: int = 40, dim: int = 4) -> None:
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, dim, generator=g)
        self.w = torch.randn(dim, generator=g)
        self.epoch = 0
        self.epochs_seen: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epochs_seen.append(epoch)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        noise = 0.1 * np.random.default_rng((self.epoch, i)).normal()
        y = torch.tensor(float(self.x[i] @ self.w) + noise, dtype=torch.float32)
        # "index" and "text" are not forward parameters: the engine must leave them out of the call.
        return {"x": self.x[i], "y": y, "index": i, "text": f"sample {i}"}


def make_evaluate(n: int = 16):
    data = ToyDataset(n)
    batch = {"x": data.x, "y": torch.stack([data[i]["y"] for i in range(n)])}

    def evaluate(model: nn.Module) -> dict[str, float]:
        out = model(**batch)
        return {"mse": float(out["loss_mse"])}

    return evaluate


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-iters", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=None, help="replaces --max-iters")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--n", type=int, default=40, help="dataset size")
    parser.add_argument("--save-every", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=2)
    parser.add_argument("--amp", default="none")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--optimizer", default="adamw")
    parser.add_argument("--clip-grad", type=float, default=1.0, help="0 disables clipping")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--jitter", action="store_true", help="random input noise (tests RNG restore)")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # tests share 2 cores; one thread also keeps reductions in a fixed order
    torch.manual_seed(0)  # the same initial weights in every process (DDP would broadcast rank 0's anyway)
    model = ToyModel(ToyConfig(), jitter=0.05 if args.jitter else 0.0)
    config = TrainConfig(
        out_dir=args.out, max_iters=None if args.epochs else args.max_iters, epochs=args.epochs,
        batch_size=args.batch_size, grad_accum=args.grad_accum, lr=0.05, weight_decay=0.01,
        optimizer=args.optimizer, schedule="poly", warmup_iters=2, clip_grad=args.clip_grad or None,
        amp=args.amp, eval_every=args.eval_every, save_every=args.save_every, keep_last=3,
        log_every=args.log_every, num_workers=args.num_workers, device=args.device, resume=args.resume,
    )
    return train(model, ToyDataset(args.n), config, evaluate=make_evaluate())


if __name__ == "__main__":
    main()
