"""VLMG: vision-language mutual guidance, inserted after every visual stage of the two-stream encoder.

Paper (arXiv 2203.15969, abstract only): VLMG is inserted into the encoder several times for hierarchical,
progressive fusion with multi-granularity linguistic context. Everything below is ours:

- The linguistic stream is the text encoder's transformer layers grouped into as many stages as visual
  stages (`text_stage_layers`): text stage i runs its layers on the words that VLMG i-1 updated, so the two
  streams are interleaved. Shallow layers (word-level) meet the high-resolution stages, deep layers
  (sentence-level) the coarse ones.
- Mutual guidance is the bidirectional attention of `vlalign.models.alignformer.vlba.VLBA` (one set of
  equations for the project): language -> vision attention updates every pixel (gated residual, through the
  backbone's `fuse` hook), vision -> language attention updates the words handed to the next text stage.
- Video: the T frames of a clip are laid side by side along the height, (B*T, C, H, W) -> (B, C, T*H, W), so
  one VLBA call lets every pixel attend to the clip's words and every word attend to the pixels of *all* T
  frames (the words are per clip, not per frame). The instance norms of VLBA then run over the clip's pixels.
"""

from __future__ import annotations

import torch
from torch import nn

from vlalign.models.alignformer.vlba import VLBA

__all__ = ["VLMG", "text_stage_layers"]


def text_stage_layers(num_layers: int, num_stages: int = 4,
                      counts: list[int] | None = None) -> list[tuple[int, int]]:
    """Split `num_layers` text layers into `num_stages` consecutive [start, stop) groups.

    counts: explicit layers per stage (must sum to num_layers); default: an even split with the remainder
    going to the *last* stages, e.g. BERT-base 12 -> 3, 3, 3, 3; MiniLM 6 -> 1, 1, 2, 2 (the deep, sentence-
    level layers feed the coarse stages that decide which object is meant); 1 layer -> 0, 0, 0, 1.
    """
    if counts is None:
        base, rem = divmod(num_layers, num_stages)
        counts = [base + (1 if i >= num_stages - rem else 0) for i in range(num_stages)]
    counts = [int(c) for c in counts]
    if len(counts) != num_stages or sum(counts) != num_layers or min(counts) < 0:
        raise ValueError(f"text_stage_layers {counts} must give {num_stages} non-negative counts summing to the "
                         f"text encoder's {num_layers} layers")
    bounds, start = [], 0
    for c in counts:
        bounds.append((start, start + c))
        start += c
    return bounds


class VLMG(nn.Module):
    """One mutual-guidance step: clip pixels (B*T, C, H, W) <-> clip words (B, N, D).

    `forward(x, words, word_mask) -> (x', words')`, same shapes; word_mask (B, N) bool, True = real token.
    """

    def __init__(self, vis_dim: int, lang_dim: int, num_heads: int = 1, gate_zero_init: str = "output"):
        super().__init__()
        self.attention = VLBA(vis_dim, lang_dim, num_heads, gated=True, gate_zero_init=gate_zero_init)

    def forward(self, x: torch.Tensor, words: torch.Tensor,
                word_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bt, c, h, w = x.shape
        b = words.shape[0]
        if bt % b:
            raise ValueError(f"VLMG: {bt} frames do not split into clips of the {b} sentences")
        t = bt // b
        clip = x.view(b, t, c, h, w).permute(0, 2, 1, 3, 4).reshape(b, c, t * h, w)  # frames stacked in height
        out = self.attention(clip, words, word_mask)
        x = out.x.reshape(b, c, t, h, w).permute(0, 2, 1, 3, 4).reshape(bt, c, h, w)
        return x, out.words
