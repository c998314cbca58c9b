"""LMDF: language-guided multi-scale dynamic filtering of the coarse encoder stages.

Paper (abstract only): LMDF uses language-guided spatio-temporal features to generate a set of
position-specific dynamic filters that update the feature of the current frame. The construction is ours:

    f   = GN(conv1x1(x))                                   (B*T, d, h, w)  the stage's feature, d channels
    ctx = ReLU(GN(conv3d_3x3x3([f; tile(W_l s)])))         (B, d, T, h, w) language-guided spatio-temporal
                                                           context: each position sees its 3x3 neighbourhood
                                                           in the previous, current and next frame
    K_r = softmax_taps(conv1x1(ctx))                       per frame, position, dilation r and channel group:
                                                           a k x k kernel (weights over its k^2 taps)
    y_r = sum_taps K_r * unfold_r(f)                       pixel-adaptive filtering of each frame's own
                                                           feature at dilation r (several scales)
    out = f + GN(conv1x1([y_r1; y_r2; ...]))               (B*T, d, h, w)

Every frame of the clip is a "current frame" (all are updated in parallel; the 3-D convolution zero-pads in
time at the clip's ends). Kernels are shared by the d/groups channels of a group (as in involution) and
normalised over their taps, so each filter is a learned, position-specific weighting of the neighbourhood --
e.g. one that picks the neighbour an object moves from. Filtering is one unfold + one multiply-sum per
dilation: no loop over positions or frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LMDF", "dynamic_filter", "group_norm"]


def group_norm(dim: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups that divide `dim`."""
    return nn.GroupNorm(math.gcd(32, dim), dim)


def dynamic_filter(x: torch.Tensor, kernels: torch.Tensor, dilation: int = 1) -> torch.Tensor:
    """Position-specific filtering: x (N, C, H, W), kernels (N, G, k*k, H, W) -> (N, C, H, W).

    out[n, c, i, j] = sum over taps (a, b) of kernels[n, c // (C / G), a * k + b, i, j]
                      * x[n, c, i + (a - k // 2) * dilation, j + (b - k // 2) * dilation]   (zero outside)
    """
    n, c, h, w = x.shape
    g, k2 = kernels.shape[1], kernels.shape[2]
    k = math.isqrt(k2)
    taps = F.unfold(x, k, dilation=dilation, padding=dilation * (k // 2))  # (N, C*k2, H*W), taps row-major
    taps = taps.view(n, g, c // g, k2, h * w)
    return (taps * kernels.reshape(n, g, 1, k2, h * w)).sum(dim=3).view(n, c, h, w)


class LMDF(nn.Module):
    """(B*T, in_dim, h, w) stage feature + sentence (B, lang_dim) -> (B*T, dim, h, w)."""

    def __init__(self, in_dim: int, lang_dim: int, dim: int, kernel: int = 3, dilations=(1, 2, 3),
                 groups: int = 8):
        super().__init__()
        if dim % groups:
            raise ValueError(f"LMDF: dim {dim} is not divisible into {groups} kernel groups")
        if kernel % 2 == 0:
            raise ValueError(f"LMDF: kernel size must be odd, got {kernel}")
        self.kernel, self.dilations, self.groups = kernel, tuple(int(r) for r in dilations), groups
        self.lateral = nn.Sequential(nn.Conv2d(in_dim, dim, 1, bias=False), group_norm(dim))
        self.language = nn.Linear(lang_dim, dim)
        self.context = nn.Sequential(nn.Conv3d(2 * dim, dim, 3, padding=1, bias=False), group_norm(dim),
                                     nn.ReLU(inplace=True))
        self.kernels = nn.Conv2d(dim, len(self.dilations) * groups * kernel**2, 1)
        self.out = nn.Sequential(nn.Conv2d(len(self.dilations) * dim, dim, 1, bias=False), group_norm(dim))

    def forward(self, x: torch.Tensor, sentence: torch.Tensor, num_frames: int) -> torch.Tensor:
        f = self.lateral(x)
        bt, d, h, w = f.shape
        b, t = bt // num_frames, num_frames
        clip = f.view(b, t, d, h, w).transpose(1, 2)  # (B, d, T, h, w)
        lang = self.language(sentence).to(f.dtype)[:, :, None, None, None].expand(-1, -1, t, h, w)
        ctx = self.context(torch.cat([clip, lang], 1)).transpose(1, 2).reshape(bt, d, h, w)
        kernels = self.kernels(ctx).view(bt, len(self.dilations), self.groups, self.kernel**2, h, w).softmax(3)
        # a handful of scales; everything inside dynamic_filter is vectorised over frames and positions
        filtered = [dynamic_filter(f, kernels[:, i], r) for i, r in enumerate(self.dilations)]
        return f + self.out(torch.cat(filtered, 1))
