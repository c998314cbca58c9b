"""Horizontal flip with left/right swapped in the sentence (vlalign.data.flip)."""

from __future__ import annotations

import pytest
import torch

from vlalign.data.flip import HorizontalFlip, mirror_sentence


@pytest.mark.parametrize("text, mirrored", [
    ("the leftmost red square", "the rightmost red square"),
    ("circle to the left of the green star", "circle to the right of the green star"),
    ("Left guy.", "Right guy."),
    ("the star in the top right corner", "the star in the top left corner"),
    ("man on right holding lefthand glove", "man on left holding righthand glove"),
    ("second square from the left", "second square from the right"),
    ("bright leftover cleft", "bright leftover cleft"),  # whole words only
])
def test_mirror_sentence_swaps_whole_direction_words(text, mirrored):
    assert mirror_sentence(text) == mirrored
    assert mirror_sentence(mirrored) == text


class Toy(torch.utils.data.Dataset):
    def __init__(self):
        self.epochs = []

    def __len__(self):
        return 64

    def set_epoch(self, epoch):
        self.epochs.append(epoch)

    def __getitem__(self, i):
        image = torch.zeros(3, 4, 4)
        image[:, :, 0] = 1.0  # a bright left column
        mask = torch.zeros(4, 4)
        mask[:, 0] = 1
        return {"image": image, "mask": mask, "text": "the left one", "id": i}


def test_flip_mirrors_image_mask_and_words_together():
    data = HorizontalFlip(Toy(), prob=0.5, seed=3)
    samples = [data[i] for i in range(len(data))]
    flipped = [s for s in samples if s["flipped"]]
    assert 16 < len(flipped) < 48  # about half
    for s in samples:
        side = -1 if s["flipped"] else 0
        assert s["image"][:, :, side].eq(1).all() and s["mask"][:, side].eq(1).all()
        assert s["text"] == ("the right one" if s["flipped"] else "the left one")
    assert set(samples[0]) == set(flipped[0])  # the same keys either way: batches collate


def test_flip_draws_are_reproducible_and_change_with_the_epoch():
    data = HorizontalFlip(Toy(), prob=0.5, seed=0)
    first = [data[i]["flipped"] for i in range(64)]
    assert first == [HorizontalFlip(Toy(), prob=0.5, seed=0)[i]["flipped"] for i in range(64)]
    data.set_epoch(1)
    assert data.dataset.epochs == [1]
    assert [data[i]["flipped"] for i in range(64)] != first
    assert not any(HorizontalFlip(Toy(), prob=0.0)[i]["flipped"] for i in range(64))
    with pytest.raises(ValueError, match="probability"):
        HorizontalFlip(Toy(), prob=1.5)
