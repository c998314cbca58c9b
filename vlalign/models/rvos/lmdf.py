"""LMDF: language-guided multi-scale dynamic filtering of the coarse encoder stages.

Paper (abstract only): LMDF uses language-guided spatio-temporal features to generate a set of
position-specific dynamic filters that update the feature of the current frame. The construction is ours:

    f   = GN(conv1x1(x))                                   (B*T, d, h, w)  the stage's feature, d channels
    m   = patch4x4(area_resize(D, 4h x 4w))                (B*T, d, h, w)  motion cue (`motion=True`): D is
                                                           the clip's central RGB difference x_t+1 - x_t-1
    ctx = ReLU(GN(conv3d_3x3x3([f + m; tile(W_l s); xy]))) (B, d, T, h, w) language-guided spatio-temporal
                                                           context: each position sees its 3x3 neighbourhood
                                                           in the previous, current and next frame
    K_r = softmax_taps(conv1x1(ctx))                       per frame, position, dilation r and channel group:
                                                           a k x k kernel (weights over its k^2 taps)
    y_r = sum_taps K_r * unfold_r(f)                       pixel-adaptive filtering of each frame's own
                                                           feature at dilation r (several scales)
    out = f + GN(conv1x1([y_r1; y_r2; ...; ctx]))          (B*T, d, h, w)

Every frame of the clip is a "current frame" (all are updated in parallel; the 3-D convolution zero-pads in
time at the clip's ends). Kernels are shared by the d/groups channels of a group (as in involution) and
normalised over their taps, so each filter is a learned, position-specific weighting of the neighbourhood --
e.g. one that picks the neighbour an object moves from. The context itself also enters the output:
filtering alone can only re-weight a frame's own features, so a motion that the 3-D convolution detects ("this
blob moved left") would otherwise reach the decoder only through how it bends the kernels. The motion cue
exists because the coarse stages barely change when an object moves a few pixels (a fraction of a 16-pixel
cell): trained without it, the clip model did no better than the single-frame control on the expressions only
motion resolves. A moving edge leaves a signed band in the RGB difference (object ahead, background behind)
whose layout gives the direction; growth leaves a ring, rotation alternating bands. `xy` are the cell
centres' coordinates in [-1, 1] (two maps): "the box at the top" needs to know where the top is, which zero
padding alone tells a CNN only faintly.
Filtering is one unfold + one multiply-sum per dilation: no loop over positions or frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vlalign.models.efn.fusion import coord_maps

__all__ = ["LMDF", "centre_coords", "dynamic_filter", "group_norm", "rgb_difference"]

MOTION_PATCH = 4  # the motion cue is resized to 4x the stage's resolution, then embedded in 4x4 patches


def centre_coords(h: int, w: int, device=None, dtype=None) -> torch.Tensor:
    """(2, h, w): x (along the width) and y of each cell's centre, in [-1, 1]: EFN's centre maps."""
    return coord_maps(1, h, w, device, dtype)[0, 4:6]


def rgb_difference(frames: torch.Tensor) -> torch.Tensor:
    """frames (B, T, 3, H, W) -> (B*T, 3, H, W): x_t+1 - x_t-1 (one-sided at the clip's ends; zeros if T = 1)."""
    if frames.shape[1] == 1:
        return torch.zeros_like(frames).flatten(0, 1)
    ahead = torch.cat([frames[:, 1:], frames[:, -1:]], 1)
    behind = torch.cat([frames[:, :1], frames[:, :-1]], 1)
    return (ahead - behind).flatten(0, 1)


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
                 groups: int = 8, motion: bool = True):
        super().__init__()
        if dim % groups:
            raise ValueError(f"LMDF: dim {dim} is not divisible into {groups} kernel groups")
        if kernel % 2 == 0:
            raise ValueError(f"LMDF: kernel size must be odd, got {kernel}")
        self.kernel, self.dilations, self.groups = kernel, tuple(int(r) for r in dilations), groups
        self.lateral = nn.Sequential(nn.Conv2d(in_dim, dim, 1, bias=False), group_norm(dim))
        self.language = nn.Linear(lang_dim, dim)
        self.motion = nn.Conv2d(3, dim, MOTION_PATCH, stride=MOTION_PATCH) if motion else None
        self.context = nn.Sequential(nn.Conv3d(2 * dim + 2, dim, 3, padding=1, bias=False), group_norm(dim),
                                     nn.ReLU(inplace=True))
        self.kernels = nn.Conv2d(dim, len(self.dilations) * groups * kernel**2, 1)
        self.out = nn.Sequential(nn.Conv2d((len(self.dilations) + 1) * dim, dim, 1, bias=False), group_norm(dim))

    def forward(self, x: torch.Tensor, sentence: torch.Tensor, num_frames: int,
                motion: torch.Tensor | None = None) -> torch.Tensor:
        """motion: (B*T, 3, H, W) the clip's RGB differences (`rgb_difference`); needed when built with it."""
        f = self.lateral(x)
        bt, d, h, w = f.shape
        b, t = bt // num_frames, num_frames
        g = f
        if self.motion is not None:
            if motion is None:
                raise ValueError("this LMDF was built with the motion cue: pass motion=rgb_difference(frames)")
            cue = F.interpolate(motion.to(f.dtype), size=(MOTION_PATCH * h, MOTION_PATCH * w), mode="area")
            g = f + self.motion(cue)
        clip = g.view(b, t, d, h, w).transpose(1, 2)  # (B, d, T, h, w)
        lang = self.language(sentence).to(f.dtype)[:, :, None, None, None].expand(-1, -1, t, h, w)
        xy = centre_coords(h, w, f.device, f.dtype)[None, :, None].expand(b, -1, t, -1, -1)  # (B, 2, T, h, w)
        ctx = self.context(torch.cat([clip, lang, xy], 1)).transpose(1, 2).reshape(bt, d, h, w)
        kernels = self.kernels(ctx).view(bt, len(self.dilations), self.groups, self.kernel**2, h, w).softmax(3)
        # a handful of scales; everything inside dynamic_filter is vectorised over frames and positions
        filtered = [dynamic_filter(f, kernels[:, i], r) for i, r in enumerate(self.dilations)]
        return f + self.out(torch.cat([*filtered, ctx], 1))
