"""Encoder fusion: language refines the visual features inside the encoder (after res3, res4 and res5).

Per fused stage with visual feature c (B, C, H, W), stage words w (B, T, D) and sentence s (B, D):
    v     = l2(CBR3(c))                                   visual embedding, D channels
    m     = l2(CBR3([v; tile(s); 8 coordinate maps]))     multi-modal feature
    Lmap  = word-pixel attention: Lmap_p = sum_t softmax_t(w_t . conv1x1(m)_p) w_t
    m', Lmap' = co-attention (both modalities updated in parallel from one affinity map)
    c    <- l2(c) + l2(CBR3(l2([Lmap'; m'])))             fed back into the encoder
where l2 normalises over channels. CBR = conv-BN-PReLU (the release's activation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvBNAct", "l2", "coord_maps", "WordPixelAttention", "CoAttention", "EncoderFusion"]


class ConvBNAct(nn.Sequential):
    """k x k conv (no bias: BN follows) -> BN -> PReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1):
        super().__init__(nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.PReLU())


def l2(x: Tensor) -> Tensor:
    """L2-normalise over channels (dim 1)."""
    return F.normalize(x, dim=1)


def coord_maps(b: int, h: int, w: int, device=None, dtype=None) -> Tensor:
    """(B, 8, H, W): each cell's box in [-1, 1] (x0, y0, x1, y1), its centre (xc, yc) and its size (1/H, 1/W).

    The release's maps, with x taken along the width and y along the height (the release swaps them, which
    only matters for non-square maps).
    """
    x0 = torch.arange(w, device=device, dtype=torch.float32) * 2 / w - 1
    y0 = torch.arange(h, device=device, dtype=torch.float32) * 2 / h - 1
    x1, y1 = x0 + 2 / w, y0 + 2 / h
    xs = [v.view(1, w).expand(h, w) for v in (x0, x1, (x0 + x1) / 2)]
    ys = [v.view(h, 1).expand(h, w) for v in (y0, y1, (y0 + y1) / 2)]
    size = [torch.full((h, w), 1 / h, device=device), torch.full((h, w), 1 / w, device=device)]
    maps = torch.stack([xs[0], ys[0], xs[1], ys[1], xs[2], ys[2], *size])
    return maps.to(dtype or torch.float32).unsqueeze(0).expand(b, -1, -1, -1)


class WordPixelAttention(nn.Module):
    """Each pixel gathers the words it matches: alpha_tp = softmax over real words t of w_t . conv1x1(m)_p."""

    def __init__(self, dim: int):
        super().__init__()
        self.visual = nn.Conv2d(dim, dim, 1)

    def forward(self, words: Tensor, m: Tensor, token_mask: Tensor) -> Tensor:
        """words (B, T, D), m (B, D, H, W), token_mask (B, T) bool -> Lmap (B, D, H, W)."""
        scores = words @ self.visual(m).flatten(2)  # (B, T, HW)
        alpha = scores.masked_fill(~token_mask[:, :, None], float("-inf")).softmax(dim=1)
        return (words.transpose(1, 2) @ alpha).view_as(m)


class CoAttention(nn.Module):
    """Co-attention embedding: one affinity A = (We m)^T (Wq Lmap) (HW x HW) updates both maps in parallel.

    Visual pixel p gathers the language map over q (A normalised over q); language pixel q gathers the visual
    map over p (A normalised over p); each result goes through its own 3x3 conv. Ours: each softmax runs over
    the index being summed (the release's normalisations differ; see model.py).
    """

    def __init__(self, dim: int, key_dim: int):
        super().__init__()
        self.key_visual = nn.Conv2d(dim, key_dim, 1, bias=False)  # W_e
        self.key_language = nn.Conv2d(dim, key_dim, 1, bias=False)  # W_q
        self.out_visual = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.out_language = nn.Conv2d(dim, dim, 3, padding=1, bias=False)

    def forward(self, m: Tensor, lmap: Tensor) -> tuple[Tensor, Tensor]:
        """m, lmap (B, D, H, W) -> m', Lmap' (B, D, H, W)."""
        affinity = self.key_visual(m).flatten(2).transpose(1, 2) @ self.key_language(lmap).flatten(2)  # (B,N,N)
        m_new = lmap.flatten(2) @ affinity.softmax(dim=2).transpose(1, 2)  # (B, D, N): sum over q
        lmap_new = m.flatten(2) @ affinity.softmax(dim=1)  # (B, D, N): sum over p
        return self.out_visual(m_new.view_as(m)), self.out_language(lmap_new.view_as(m))


class EncoderFusion(nn.Module):
    """One fusion step: visual feature c (B, C, H, W) + stage words + sentence -> refined c, same shape.

    dim: the multi-modal width D (release 512); key_dim: the co-attention key width (release 256);
    l2_residual: the release's `l2(c) + l2(fused)`; False gives a plain residual `c + fused` (ours) that keeps
    the backbone's feature scale and starts as the identity (the last BN's scale is zero, as in zero-init
    residual blocks), so a pretrained encoder's later stages first see the features they were trained on.
    """

    def __init__(self, channels: int, dim: int, key_dim: int, l2_residual: bool = True):
        super().__init__()
        self.visual = ConvBNAct(channels, dim)
        self.multimodal = ConvBNAct(2 * dim + 8, dim)
        self.word_attention = WordPixelAttention(dim)
        self.co_attention = CoAttention(dim, key_dim)
        self.out = ConvBNAct(2 * dim, channels)
        self.l2_residual = l2_residual
        if not l2_residual:
            nn.init.zeros_(self.out[1].weight)

    def forward(self, c: Tensor, words: Tensor, sentence: Tensor, token_mask: Tensor) -> Tensor:
        """c (B, C, H, W), words (B, T, D), sentence (B, D), token_mask (B, T) -> (B, C, H, W)."""
        v = l2(self.visual(c))
        b, _, h, w = v.shape
        tiled = sentence.to(v.dtype)[:, :, None, None].expand(-1, -1, h, w)
        m = l2(self.multimodal(torch.cat([v, tiled, coord_maps(b, h, w, v.device, v.dtype)], dim=1)))
        lmap = self.word_attention(words.to(m.dtype), m, token_mask)
        m_new, lmap_new = self.co_attention(m, lmap)
        fused = self.out(l2(torch.cat([lmap_new, m_new], dim=1)))
        return l2(c) + l2(fused) if self.l2_residual else c + fused
