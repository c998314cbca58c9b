"""Decoder with the Boundary Enhancement Module (BEM) at 4 levels.

BEM (paper; release `SqueezeBodyEdge`): a learned affine warp of x, regressed from x and a 4x-downsampled
context and initialised to the identity, gives the *body*; *edge = x - body* keeps what the warp cannot
explain (fine structure). The edge is fused with the skip connection of the next finer level.

Top-down, level 4 (coarsest) to level 1 (final), with x the decoder feature and s the level's skip:
    body, edge = BEM(x);  edge <- conv1x1([up(edge); s]);  y = edge + up(body)
    x <- CBR3([up(x); y])                          the next level's input
    predictions: mask (from the new x), body (from body), edge (from the fused edge), 1 channel each
Skips: res4, res3, res2 (reduced by CBR3) for levels 4-2, and for level 1 a stride-2 *detail stem* on the
image (ours: the release uses ResNet's stride-2 stem output, which the backbone contract does not expose).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlalign.models.efn.fusion import ConvBNAct

__all__ = ["BEM", "Head", "DecoderLevel", "BoundaryDecoder", "resize"]


def resize(x: Tensor, size) -> Tensor:
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, mode="bilinear",
                                                                       align_corners=False)


class BEM(nn.Module):
    """x (B, C, H, W) -> body (B, C, H, W) = affine warp of x, edge = x - body."""

    def __init__(self, dim: int, hidden: int = 32):
        super().__init__()
        # two depthwise stride-2 convs: a context 4x coarser than x, seen next to x when regressing the warp
        self.down = nn.Sequential(
            nn.Conv2d(dim, dim, 3, stride=2, padding=1, groups=dim, bias=False), nn.BatchNorm2d(dim), nn.ReLU(),
            nn.Conv2d(dim, dim, 3, stride=2, padding=1, groups=dim, bias=False), nn.BatchNorm2d(dim), nn.ReLU())
        self.flow = nn.Conv2d(2 * dim, dim, 3, padding=1, bias=False)
        self.theta = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 6))
        # identity warp at the start: body = x exactly, edge = 0, and the warp is learned from there
        nn.init.zeros_(self.theta[2].weight)
        with torch.no_grad():
            self.theta[2].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        context = resize(self.down(x), x.shape[-2:])
        pooled = self.flow(torch.cat([x, context], dim=1)).mean(dim=(2, 3))  # (B, C)
        theta = self.theta(pooled).view(-1, 2, 3).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        body = F.grid_sample(x, grid, align_corners=False)
        return body, x - body


class Head(nn.Sequential):
    """CBR3 (C -> C/2) -> 1x1 conv to one logit map (the release's prediction heads).

    Ours: the logit bias starts at the log-odds of `prior` (as RetinaNet does for its classifier): most pixels
    are background, and starting at p = 0.5 spends the first hundreds of steps learning just that.
    """

    def __init__(self, dim: int, prior: float = 0.1):
        mid = max(dim // 2, 1)
        super().__init__(ConvBNAct(dim, mid), nn.Conv2d(mid, 1, 1))
        nn.init.constant_(self[1].bias, math.log(prior / (1 - prior)))


class DecoderLevel(nn.Module):
    """One level: x (B, dim, h, w) + skip (B, dim, H, W) -> next x (B, out_dim, H, W) and its predictions.

    bem=False is the ablation without BEM: y = conv1x1(s) + up(x), mask prediction only.
    """

    def __init__(self, dim: int, out_dim: int, bem: bool = True):
        super().__init__()
        self.bem = BEM(dim) if bem else None
        self.fuse = nn.Conv2d(2 * dim if bem else dim, dim, 1, bias=False)
        self.out = ConvBNAct(2 * dim, out_dim)
        self.mask_head = Head(out_dim)
        if bem:
            self.body_head, self.edge_head = Head(dim), Head(dim)

    def forward(self, x: Tensor, skip: Tensor, aux: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        """-> next x, {"mask"[, "body", "edge"]} logits (B, 1, h_k, w_k) at their own resolution.

        aux=False skips the body/edge heads (inference reads only the final mask)."""
        size = skip.shape[-2:]
        if self.bem is None:
            y = self.fuse(skip) + resize(x, size)
        else:
            body, edge = self.bem(x)
            edge = self.fuse(torch.cat([resize(edge, size), skip], dim=1))
            y = edge + resize(body, size)
        x_next = self.out(torch.cat([resize(x, size), y], dim=1))
        preds = {"mask": self.mask_head(x_next)}
        if aux and self.bem is not None:
            preds.update(body=self.body_head(body), edge=self.edge_head(edge))
        return x_next, preds


class BoundaryDecoder(nn.Module):
    """Backbone features [res2, res3, res4, res5] + the normalised image -> 4 levels of predictions.

    in_channels: the backbone's 4 widths; dims: (d4, d3, d2, d1) the widths of levels 4..1 (release 256, 128,
    64, 32). Level 1 works at stride 2 and its mask is the final prediction.
    """

    def __init__(self, in_channels: tuple[int, ...], dims: tuple[int, ...] = (256, 128, 64, 32),
                 bem: bool = True):
        super().__init__()
        c2, c3, c4, c5 = in_channels
        d4, d3, d2, d1 = dims
        self.top = nn.Sequential(ConvBNAct(c5, 2 * d4), ConvBNAct(2 * d4, d4))  # release: 2048 -> 512 -> 256
        self.skips = nn.ModuleList([ConvBNAct(c4, d4), ConvBNAct(c3, d3), ConvBNAct(c2, d2)])
        self.detail = nn.Sequential(ConvBNAct(3, d1, stride=2), ConvBNAct(d1, d1))
        self.levels = nn.ModuleList(DecoderLevel(d, out, bem) for d, out in zip(dims, (d3, d2, d1, d1)))

    def forward(self, features: list[Tensor], image: Tensor, aux: bool = True) -> list[dict[str, Tensor]]:
        """features: 4 maps (B, C_i, H_i, W_i); image (B, 3, H, W) normalised -> [level 1, ..., level 4]."""
        c2, c3, c4, c5 = features
        skips = [self.skips[0](c4), self.skips[1](c3), self.skips[2](c2), self.detail(image)]
        x, preds = self.top(c5), []
        for level, skip in zip(self.levels, skips):
            x, p = level(x, skip, aux)
            preds.append(p)
        return preds[::-1]  # level 1 (final) first
