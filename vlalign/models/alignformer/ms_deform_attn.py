"""Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021) in pure PyTorch.

The released AlignFormer/LGFormer code needs a compiled CUDA op; this file is the CPU-capable path.

Speed (shared/docs/performance.md): the usual pure-PyTorch version calls `grid_sample` once per level and then
stacks, flattens and multiplies; that churn costs as much as the sampling. Here every level is packed into
one zero-bordered *canvas*, so a single `grid_sample` call samples all levels, heads and points at once:

    canvas rows:  [0-row] level 0 (H0 x W0) [0-row] level 1 (H1 x W1) [0-row] ... ; one 0-column each side.

Sampling positions are clamped per level to [-1, size] in pixel units; together with the zero border this
reproduces `grid_sample(padding_mode="zeros", align_corners=False)` on each level separately *exactly*
(a bilinear tap that leaves a level lands on a zero row/column, never on a neighbouring level).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

Shapes = tuple[tuple[int, int], ...]


@lru_cache(maxsize=32)
def _canvas_layout(shapes: Shapes, device: torch.device) -> tuple[torch.Tensor, int, int, torch.Tensor]:
    """Gather index that builds the canvas from flattened levels, its size and each level's top-left corner.

    Returns index (Hc*Wc,) long into the S+1 flattened tokens (S = the appended zero token), Hc, Wc and
    corner (L, 2) float: canvas (x, y) of each level's pixel (0, 0).
    """
    width = max(w for _, w in shapes) + 2
    height = 1 + sum(h + 1 for h, _ in shapes)
    zero = sum(h * w for h, w in shapes)
    index = torch.full((height, width), zero, dtype=torch.long)
    corners, start, top = [], 0, 1
    for h, w in shapes:
        index[top : top + h, 1 : 1 + w] = torch.arange(start, start + h * w).view(h, w)
        corners.append((1.0, float(top)))
        start, top = start + h * w, top + h + 1
    return index.flatten().to(device), height, width, torch.tensor(corners, device=device)


def ms_deform_attn_sample(
    value: torch.Tensor, shapes: Shapes, locations: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Weighted bilinear sampling of every level, head and point with one `grid_sample` call.

    value: (B, S, h, Dh), the levels flattened row-major one after the other (S = sum H_l*W_l).
    locations: (B, Q, h, L, P, 2) in [0, 1] level coordinates (x, y); outside gives zeros.
    weights: (B, Q, h, L, P) attention weights. Returns (B, Q, h*Dh).
    """
    b, s, heads, dh = value.shape
    _, q, _, levels, points, _ = locations.shape
    index, hc, wc, corner = _canvas_layout(tuple(shapes), value.device)
    # (B, h, Dh, S+1): the extra token is the zero the canvas border points at
    flat = F.pad(value.permute(0, 2, 3, 1), (0, 1))
    canvas = flat.index_select(3, index).view(b * heads, dh, hc, wc)  # (B*h, Dh, Hc, Wc)

    size = torch.tensor(shapes, dtype=locations.dtype, device=locations.device).flip(-1)  # (L, 2) as (W, H)
    pix = torch.minimum((locations * size[:, None] - 0.5).clamp_min(-1.0), size[:, None])  # level pixels
    scale = torch.tensor([2.0 / wc, 2.0 / hc], dtype=locations.dtype, device=locations.device)
    grid = (pix + (corner[:, None].to(locations.dtype) + 0.5)) * scale - 1.0  # canvas, align_corners=False
    grid = grid.permute(0, 2, 1, 3, 4, 5).reshape(b * heads, q, levels * points, 2)

    sampled = F.grid_sample(canvas, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    w = weights.permute(0, 2, 1, 3, 4).reshape(b * heads, 1, q, levels * points)
    out = (sampled * w).sum(-1)  # (B*h, Dh, Q)
    return out.view(b, heads * dh, q).transpose(1, 2)


class MSDeformAttn(nn.Module):
    """Each query attends to `num_points` learned offsets around its reference point in every level."""

    def __init__(self, dim: int = 256, num_levels: int = 3, num_heads: int = 8, num_points: int = 4):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.dim, self.num_levels, self.num_heads, self.num_points = dim, num_levels, num_heads, num_points
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Deformable DETR's initialisation: offsets start on a ring of directions, one per head, the k-th
        # point k steps out; uniform attention weights.
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        ring = torch.stack([theta.cos(), theta.sin()], -1)
        ring = ring / ring.abs().max(-1, keepdim=True).values  # (h, 2)
        steps = torch.arange(1, self.num_points + 1, dtype=torch.float32)
        bias = ring[:, None, None, :] * steps[None, None, :, None]  # (h, 1, P, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.expand(-1, self.num_levels, -1, -1).flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        shapes: Shapes,
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """query (B, Q, C); reference_points (B|1, Q, 2) in [0, 1], shared by every level (no padding);
        value (B, S, C) with S = sum H_l*W_l; shapes ((H_l, W_l), ...); padding_mask (B, S) True = padded.
        Returns (B, Q, C)."""
        b, q, _ = query.shape
        h, lv, p = self.num_heads, self.num_levels, self.num_points
        v = self.value_proj(value)
        if padding_mask is not None:
            v = v.masked_fill(padding_mask[..., None], 0.0)
        v = v.view(b, -1, h, self.dim // h)  # (B, S, h, Dh)

        offsets = self.sampling_offsets(query).view(b, q, h, lv, p, 2)
        weights = self.attention_weights(query).view(b, q, h, lv * p).softmax(-1).view(b, q, h, lv, p)
        size = torch.tensor(shapes, dtype=query.dtype, device=query.device).flip(-1)  # (L, 2) as (W, H)
        locations = reference_points[:, :, None, None, None, :] + offsets / size[:, None]  # (B, Q, h, L, P, 2)
        return self.output_proj(ms_deform_attn_sample(v, shapes, locations, weights))
