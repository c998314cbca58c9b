"""Horizontal flip for referring segmentation training: image and mask mirrored, "left" and "right" swapped
in the sentence, so that the pair still describes the same object.

Most referring segmentation code turns flipping off because of the direction words (LAVT, CRIS); swapping
them keeps the augmentation valid and doubles what a model sees of every spatial expression. Only the
horizontal axis: a vertically flipped photo (sky below) is not a photo a user will send.

Known limit: "right" as in "the right one" (= correct) is swapped too; in RefCOCO-style sentences the word is
nearly always a direction.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

SWAPS = {
    "left": "right", "right": "left", "leftmost": "rightmost", "rightmost": "leftmost",
    "lefthand": "righthand", "righthand": "lefthand", "leftside": "rightside", "rightside": "leftside",
}  # fmt: skip
_WORD = re.compile(r"\b(" + "|".join(sorted(SWAPS, key=len, reverse=True)) + r")\b", re.IGNORECASE)


def mirror_sentence(text: str) -> str:
    """The sentence that describes the mirrored image: every left/right word swapped, capitals kept."""

    def swap(m: re.Match) -> str:
        word = m.group(0)
        new = SWAPS[word.lower()]
        return new.upper() if word.isupper() else new.capitalize() if word[0].isupper() else new

    return _WORD.sub(swap, text)


class HorizontalFlip(torch.utils.data.Dataset):
    """Wraps a training dataset of {"image" (3, S, S), "mask" (S, S), "text", ...} samples: each item is
    mirrored with probability `prob`, drawn from (seed, epoch, index) so a resumed run sees the same flips."""

    def __init__(self, dataset: Any, prob: float = 0.5, seed: int = 0) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {prob!r}")
        self.dataset, self.prob, self.seed, self.epoch = dataset, prob, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.dataset[index]
        if np.random.default_rng((self.seed, self.epoch, index, 0xF11B)).random() >= self.prob:
            return {**sample, "flipped": False}  # every sample has the same keys (the collate checks)
        return {**sample, "image": sample["image"].flip(-1), "mask": sample["mask"].flip(-1),
                "text": mirror_sentence(sample["text"]), "flipped": True}
