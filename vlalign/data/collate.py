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
    sizes). With `tokenize`, its "tokens" (BxL long) and "token_mask" (BxL bool) are added from the texts, and
    samples with `selection_texts` (a list of E_i more sentences each) and `selection_objects` ((E_i,) long) give
    "selection_tokens" / "selection_token_mask" (B x E x L, E = max E_i, at least 1) and "selection_objects"
    (B x E, 0 = padding) in their place.
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
            if "selection_texts" in batch:
                batch.update(self._selection(batch.pop("selection_texts"), batch.pop("selection_objects")))
        return batch

    def _selection(self, texts: list[list[str]], objects: list[torch.Tensor] | torch.Tensor) -> dict[str, Any]:
        """Per-sample lists of sentences and their object numbers -> padded (B, E, L) tokens and (B, E) objects."""
        b, e = len(texts), max(1, max(len(t) for t in texts))
        flat = [x for t in texts for x in t]
        tok = self._tokens(flat) if flat else {"tokens": torch.zeros(0, 1, dtype=torch.long),
                                               "token_mask": torch.zeros(0, 1, dtype=torch.bool)}
        length = tok["tokens"].shape[1]
        out = {"selection_tokens": torch.zeros(b, e, length, dtype=torch.long),
               "selection_token_mask": torch.zeros(b, e, length, dtype=torch.bool),
               "selection_objects": torch.zeros(b, e, dtype=torch.long)}
        start = 0
        for i, (t, o) in enumerate(zip(texts, objects)):
            if len(o) != len(t):
                raise ValueError(f"sample {i}: {len(t)} selection_texts but {len(o)} selection_objects")
            out["selection_tokens"][i, : len(t)] = tok["tokens"][start : start + len(t)]
            out["selection_token_mask"][i, : len(t)] = tok["token_mask"][start : start + len(t)]
            out["selection_objects"][i, : len(t)] = torch.as_tensor(o, dtype=torch.long)
            start += len(t)
        return out

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
