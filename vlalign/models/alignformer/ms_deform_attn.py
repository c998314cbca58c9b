"""Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021) in pure PyTorch.

The released AlignFormer/LGFormer code needs a compiled CUDA op; this file is the CPU-capable path.

Speed (shared/docs/performance.md): the usual pure-PyTorch version calls `grid_sample` once per level and then
stacks, flattens and multiplies; that churn costs as much as the sampling. Here every level is packed into
one zero-bordered *canvas*, so a single `grid_sample` call samples all levels, heads and points at once:

    canvas rows:  [0-row] level 0 (H0 x W0) [0-row] level 1 (H1 x W1) [0-row] ... ; one 0-column each side.

Sampling positions are clamped per level to [-1, size] in pixel units; together with the zero border this
reproduces `grid_sample(padding_mode="zeros", align_corners=False)` on each level separately *exactly*
(a bilinear tap that leaves a level lands on a zero row/column, never on a neighbouring level).
Inference (no autograd) takes an `embedding_bag` path over the same canvas instead (measured on 2 CPU cores,
paper scale, 4725 queries x 8 heads x 12 samples: forward 36 ms vs 124 ms; backward slower, hence training
keeps `grid_sample`).
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
    corner (L, 2) float: canvas (x, y) of each level's pixel (0, 0). One zero row/column before each level
    and two after the last row/column, so that both bilinear taps of any clamped position exist.
    """
    width = max(w for _, w in shapes) + 3
    height = 2 + sum(h + 1 for h, _ in shapes)
    zero = sum(h * w for h, w in shapes)
    with torch.inference_mode(False):  # cached: must stay usable by autograd after an inference-mode call
        index = torch.full((height, width), zero, dtype=torch.long)
        corners, start, top = [], 0, 1
        for h, w in shapes:
            index[top : top + h, 1 : 1 + w] = torch.arange(start, start + h * w).view(h, w)
            corners.append((1.0, float(top)))
            start, top = start + h * w, top + h + 1
        return index.flatten().to(device), height, width, torch.tensor(corners, device=device)


def _canvas_pixels(shapes: Shapes, locations: torch.Tensor, corner: torch.Tensor) -> torch.Tensor:
    """[0, 1] level coordinates (..., L, P, 2) -> canvas pixel coordinates (pixel centres at integers)."""
    size = torch.tensor(shapes, dtype=locations.dtype, device=locations.device).flip(-1)[:, None]  # (L, 1, 2)
    # clamping to [-1, size] keeps every bilinear tap of an outside position on the zero border
    pix = torch.minimum((locations * size - 0.5).clamp_min(-1.0), size)
    return pix + corner[:, None].to(locations.dtype)


def ms_deform_attn_sample(
    value: torch.Tensor, shapes: Shapes, locations: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Weighted bilinear sampling of every level, head and point: one `grid_sample` call.

    value: (B, S, h, Dh), the levels flattened row-major one after the other (S = sum H_l*W_l).
    locations: (B, Q, h, L, P, 2) in [0, 1] level coordinates (x, y); outside gives zeros.
    weights: (B, Q, h, L, P) attention weights. Returns (B, Q, h*Dh).
    Without autograd the `embedding_bag` path below is used (same numbers, ~3x faster forward).
    """
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in (value, locations, weights))):
        return ms_deform_attn_sample_bag(value, shapes, locations, weights)
    b, s, heads, dh = value.shape
    _, q, _, levels, points, _ = locations.shape
    index, hc, wc, corner = _canvas_layout(tuple(shapes), value.device)
    flat = F.pad(value.permute(0, 2, 3, 1), (0, 1))  # (B, h, Dh, S+1): the zero token the border points at
    canvas = flat.index_select(3, index).view(b * heads, dh, hc, wc)  # (B*h, Dh, Hc, Wc)

    pix = _canvas_pixels(shapes, locations, corner)  # (B, Q, h, L, P, 2)
    scale = torch.tensor([2.0 / wc, 2.0 / hc], dtype=pix.dtype, device=pix.device)
    grid = (pix + 0.5) * scale - 1.0  # align_corners=False normalisation of the canvas
    grid = grid.permute(0, 2, 1, 3, 4, 5).reshape(b * heads, q, levels * points, 2)

    sampled = F.grid_sample(canvas, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    w = weights.permute(0, 2, 1, 3, 4).reshape(b * heads, 1, q, levels * points)
    out = (sampled * w).sum(-1)  # (B*h, Dh, Q)
    return out.view(b, heads * dh, q).transpose(1, 2)


def ms_deform_attn_sample_bag(
    value: torch.Tensor, shapes: Shapes, locations: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Same as `ms_deform_attn_sample` as one `embedding_bag`: each query's output is the sum of its
    L*P*4 bilinear taps weighted by tap weight x attention weight, gathered without materialising the
    (B*h, Dh, Q, L*P) samples. Its backward (a sort of all indices) is slower than `grid_sample`'s, so it
    serves inference only."""
    b, s, heads, dh = value.shape
    _, q, _, levels, points, _ = locations.shape
    index, hc, wc, corner = _canvas_layout(tuple(shapes), value.device)
    flat = F.pad(value.permute(0, 2, 1, 3), (0, 0, 0, 1))  # (B, h, S+1, Dh)
    table = flat.index_select(2, index).view(b * heads * hc * wc, dh)

    pix = _canvas_pixels(shapes, locations, corner).permute(0, 2, 1, 3, 4, 5)  # (B, h, Q, L, P, 2)
    corner0 = pix.floor()
    fx, fy = (pix - corner0).unbind(-1)
    x0, y0 = corner0.long().unbind(-1)
    top_left = torch.arange(b * heads, device=value.device).view(b, heads, 1, 1, 1) * (hc * wc) + y0 * wc + x0
    taps = torch.stack([top_left, top_left + 1, top_left + wc, top_left + wc + 1], -1)  # (B, h, Q, L, P, 4)
    gx, gy = 1.0 - fx, 1.0 - fy
    tap_w = torch.stack([gx * gy, fx * gy, gx * fy, fx * fy], -1) * weights.permute(0, 2, 1, 3, 4)[..., None]
    k = levels * points * 4
    out = F.embedding_bag(taps.view(-1, k), table, per_sample_weights=tap_w.reshape(-1, k), mode="sum")
    return out.view(b, heads, q, dh).transpose(1, 2).reshape(b, q, heads * dh)


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
        locations = reference_points[:, :, None, None, None] + offsets / size[:, None]  # (B, Q, h, L, P, 2)
        return self.output_proj(ms_deform_attn_sample(v, shapes, locations, weights))
