"""Collate referring samples into a batch (see ARCHITECTURE.md, "Samples and batches")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["ReferCollate", "make_collate"]

Tokenize = Callable[[list[str]], dict[str, torch.Tensor]]


class ReferCollate:
    """list of sample dicts -> batch dict.

    Keys whose values are tensors of one shape are stacked (image Bx3xSxS, mask BxSxS); every other key stays
    a list of length B (text, ids, orig_size, transform params, orig_mask, and full-size images of different
    sizes). With `tokenize`, its "tokens" (BxL long) and "token_mask" (BxL bool) are added from the texts.
    A class rather than a closure so that it pickles into spawned data-loader workers.
    """

    def __init__(self, tokenize: Tokenize | None = None) -> None:
        self.tokenize = tokenize

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        if len(samples) == 0:
            raise ValueError("cannot collate an empty list of samples")
        keys = list(samples[0])
        for k, sample in enumerate(samples):
            if set(sample) != set(keys):
                raise ValueError(f"sample {k} has keys {sorted(sample)}, but sample 0 has {sorted(keys)}")
        batch: dict[str, Any] = {}
        for key in keys:
            values = [sample[key] for sample in samples]
            if all(isinstance(v, torch.Tensor) for v in values) and len({v.shape for v in values}) == 1:
                batch[key] = torch.stack(values)
            else:
                batch[key] = values
        if self.tokenize is not None:
            if "text" not in batch:
                raise ValueError("a tokenize function was given but the samples have no 'text'")
            batch.update(self._tokens(batch["text"]))
        return batch

    def _tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        out = self.tokenize(texts)
        for key in ("tokens", "token_mask"):
            if not isinstance(out, dict) or not isinstance(out.get(key), torch.Tensor):
                raise ValueError(
                    f"tokenize must return a dict with tensor {key!r} (BxL), got {type(out).__name__}"
                )
            if out[key].ndim != 2 or out[key].shape[0] != len(texts):
                raise ValueError(
                    f"tokenize returned {key!r} of shape {tuple(out[key].shape)}, expected {len(texts)}xL"
                )
        if out["tokens"].shape != out["token_mask"].shape:
            raise ValueError("tokenize returned 'tokens' and 'token_mask' of different shapes")
        return {"tokens": out["tokens"].long(), "token_mask": out["token_mask"].bool()}


def make_collate(tokenize: Tokenize | None = None) -> ReferCollate:
    """Collate function for `DataLoader(collate_fn=...)`; `tokenize` is e.g. `model.tokenize`."""
    return ReferCollate(tokenize)
