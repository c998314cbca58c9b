"""Reduce Python objects across torch.distributed ranks, for evaluators.

Evaluators keep per-sample records keyed by a sample id (a sentence id, a (video, expression) pair, ...).
`DistributedSampler` pads the last batch by repeating samples, so the same id can be scored on two ranks;
`gather_records` merges the records of every rank and keeps one record per id. Without an initialised process
group every helper degrades to the single-process answer, so evaluators call them unconditionally.

With the NCCL backend, `all_gather_object` moves the pickled bytes through the current CUDA device: call
`torch.cuda.set_device(local_rank)` before evaluating (the engine does).
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Iterable
from typing import Any

import torch.distributed as dist


def is_distributed() -> bool:
    """True when a process group is initialised (and there is something to gather)."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order; `[obj]` when not distributed. A collective call."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def merge_records(
    parts: Iterable[Iterable[tuple[Hashable, Any]]], *, what: str = "record"
) -> dict[Hashable, Any]:
    """Merge sequences of (id, record) pairs into one id -> record dict, keeping the first record of each id.

    Identical duplicates (the sampler's padding) are dropped silently. A duplicate whose record differs means
    either non-deterministic inference on the padded copy or ids that are not unique per sample (e.g. ref_id
    where sent_id was meant); we warn instead of raising so a long evaluation is not lost, and keep the first
    record, in rank order, so every rank ends with the same result.
    """
    merged: dict[Hashable, Any] = {}
    conflicts: list[Hashable] = []
    for part in parts:
        for key, record in part:
            if key not in merged:
                merged[key] = record
            elif merged[key] != record:
                conflicts.append(key)
    if conflicts:
        shown = ", ".join(repr(k) for k in conflicts[:10])
        more = f" and {len(conflicts) - 10} more" if len(conflicts) > 10 else ""
        warnings.warn(
            f"{len(conflicts)} ids were scored twice with different {what}s (kept the first): {shown}{more}; "
            "check that ids are unique per sample",
            stacklevel=3,
        )
    return merged


def gather_records(pairs: Iterable[tuple[Hashable, Any]], *, what: str = "record") -> dict[Hashable, Any]:
    """Every rank's (id, record) pairs merged by `merge_records`: the same dict on every rank. Collective.

    Pairs rather than a dict so that a duplicate within one rank is checked the same way as across ranks.
    """
    return merge_records(all_gather_object(list(pairs)), what=what)
