"""FPN-style mask decoder of the two-stream model (ours: the paper's decoder is not public).

Each of the 4 encoder stages is brought to `dim` channels by a neck (LMDF on the coarse stages, a plain
1x1 lateral elsewhere); a top-down pathway adds each upsampled coarser map to the next finer one and smooths
it (3x3 conv, GN, ReLU) down to stride 4; a 1x1 embedding of the cell-centre coordinates is added, the
sentence modulates that stride-4 map (FiLM: x (1 + gamma(s)) + beta(s), so that the mask head itself reads the
language), and a head predicts one logit per stride-4 pixel.
The model upsamples it to the input size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vlalign.models.rvos.lmdf import centre_coords, group_norm

__all__ = ["Lateral", "FPNDecoder"]


def _conv_gn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), group_norm(cout), nn.ReLU(inplace=True))


class Lateral(nn.Module):
    """The plain neck: 1x1 conv + GN; takes LMDF's arguments and ignores the language and frame count."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(in_dim, dim, 1, bias=False), group_norm(dim))

    def forward(self, x: torch.Tensor, sentence: torch.Tensor | None = None, num_frames: int = 1,
                motion: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(x)


class FPNDecoder(nn.Module):
    """4 maps (N, dim, H_i, W_i), finest first, + sentence per map (N, lang_dim) -> logits (N, 1, H_0, W_0)."""

    def __init__(self, dim: int, lang_dim: int, num_levels: int = 4, prior: float = 0.1, head: bool = True):
        super().__init__()
        self.smooth = nn.ModuleList(_conv_gn_relu(dim, dim) for _ in range(num_levels - 1))
        self.film = nn.Linear(lang_dim, 2 * dim)
        self.position = nn.Conv2d(2, dim, 1)  # cell-centre coordinates, added before the FiLM (see forward)
        # head=False: a query decoder makes the masks from `features` (queries.py); no unused parameters
        self.head = nn.Sequential(_conv_gn_relu(dim, dim), nn.Conv2d(dim, 1, 1)) if head else None
        if head:  # start at the background-dominated prior instead of p = 0.5 (a stable first few hundred steps)
            nn.init.constant_(self.head[-1].bias, math.log(prior / (1 - prior)))

    def forward(self, maps: list[torch.Tensor], sentence: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            raise RuntimeError("this FPNDecoder was built without its head: use features()")
        return self.head(self.features(maps, sentence))

    def features(self, maps: list[torch.Tensor], sentence: torch.Tensor) -> torch.Tensor:
        """The sentence-modulated stride-4 map (N, dim, H_0, W_0) the head reads."""
        return self.modulate(self.top_down(maps), sentence)

    def top_down(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """The FPN's stride-4 map (N, dim, H_0, W_0) with the position embedding, before the sentence's FiLM."""
        p = maps[-1]
        for i in range(len(maps) - 2, -1, -1):
            p = F.interpolate(p, size=maps[i].shape[-2:], mode="bilinear", align_corners=False) + maps[i]
            p = self.smooth[i](p)
        # position enters before the sentence's FiLM, so "the one at the top" can scale the channels that carry y
        return p + self.position(centre_coords(*p.shape[-2:], p.device, p.dtype)[None])

    def modulate(self, p: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """FiLM of a (N, dim, h, w) map by the sentence (N, lang_dim): x (1 + gamma(s)) + beta(s)."""
        gamma, beta = self.film(sentence).to(p.dtype)[:, :, None, None].chunk(2, dim=1)
        return p * (1 + gamma) + beta
