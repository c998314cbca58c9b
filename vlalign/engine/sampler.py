"""A resumable, distributed batch sampler whose position is (epoch, iteration within the epoch).

Each epoch draws one permutation of the dataset from (seed, epoch) and cuts it into GLOBAL batches of
`world_size * grad_accum * batch_per_process` indices, one per iteration. The global batch of an iteration is
split into `grad_accum * world_size` equal chunks; rank r takes chunk `a * world_size + r` at accumulation
step a. The sequence of global batches therefore depends neither on the world size nor on grad_accum, so a
2-process run sees the same samples per iteration as a 1-process run with the same global batch, and a run
resumed at (epoch, iteration) skips exactly the batches already consumed.

The tail of the permutation that does not fill a global batch is dropped (`drop_last=True`) or filled with the
permutation's first indices (`drop_last=False`, as torch's DistributedSampler pads).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized

import numpy as np


class ResumableBatchSampler:
    """Yields per-process micro-batches (lists of dataset indices); use as a DataLoader `batch_sampler`.

    Args:
        dataset: anything with `len()`; its `set_epoch(epoch)` is called by `set_epoch` when it has one.
        batch_per_process: samples in one micro-batch of one process.
        world_size, rank: this process's place in the group.
        grad_accum: micro-batches per process per iteration.
        seed: with the epoch, fixes the permutation.
        drop_last: drop (True) or pad (False) the incomplete last global batch of each epoch.
    """

    def __init__(self, dataset: Sized, batch_per_process: int, world_size: int = 1, rank: int = 0,
                 grad_accum: int = 1, seed: int = 0, drop_last: bool = True) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.dataset = dataset
        self.micro = batch_per_process
        self.world_size = world_size
        self.rank = rank
        self.grad_accum = grad_accum
        self.seed = seed
        self.drop_last = drop_last
        self.global_batch = batch_per_process * world_size * grad_accum
        n = len(dataset)
        self.iters_per_epoch = n // self.global_batch if drop_last else math.ceil(n / self.global_batch)
        if self.iters_per_epoch == 0:
            raise ValueError(
                f"the dataset has {n} samples, fewer than one global batch of {self.global_batch} (drop_last)"
            )
        self.epoch = 0
        self.start_iter = 0

    def set_epoch(self, epoch: int, start_iter: int = 0) -> None:
        """Position the sampler at iteration `start_iter` of `epoch` and tell the dataset the epoch."""
        if not 0 <= start_iter <= self.iters_per_epoch:
            raise ValueError(f"start_iter {start_iter} is outside the epoch's {self.iters_per_epoch} "
                             "iterations")
        self.epoch, self.start_iter = epoch, start_iter
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def epoch_order(self) -> np.ndarray:
        """The epoch's indices, cut or padded to `iters_per_epoch` global batches (shared by every rank)."""
        n = len(self.dataset)
        order = np.random.default_rng((self.seed, self.epoch)).permutation(n)
        size = self.iters_per_epoch * self.global_batch
        # np.resize repeats the permutation from its start when padding, and truncates when dropping.
        return np.resize(order, size)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.epoch_order()
        for it in range(self.start_iter, self.iters_per_epoch):
            batch = order[it * self.global_batch:(it + 1) * self.global_batch]
            for a in range(self.grad_accum):
                chunk = a * self.world_size + self.rank
                yield batch[chunk * self.micro:(chunk + 1) * self.micro].tolist()

    def __len__(self) -> int:
        """Micro-batches this process still draws in the current epoch."""
        return (self.iters_per_epoch - self.start_iter) * self.grad_accum
