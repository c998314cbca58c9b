"""Pixel decoder: multi-scale deformable attention over strides 8/16/32, pixels attending to the words after
every layer, then an FPN step with the stride-4 feature that gives the mask features (Mask2Former's
MSDeformAttnPixelDecoder with the release's word cross-attention, mqchen1993/LGFormer
`lib/mask_predictor.py`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vlalign.models.alignformer.half_plane import HalfPlaneContext
from vlalign.models.alignformer.ms_deform_attn import MSDeformAttn, Shapes


def group_norm(dim: int) -> nn.GroupNorm:
    """GroupNorm(32) as released; fewer groups only when `dim` is not a multiple of 32 (tiny test configs)."""
    return nn.GroupNorm(math.gcd(32, dim), dim)


def sine_position_encoding(h: int, w: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """DETR's normalised sine encoding (temperature 1e4, scale 2*pi) without padding: (1, dim, h, w),
    the first dim/2 channels encode y, the rest x, each as interleaved sin/cos."""
    half = dim // 2
    ys = torch.arange(1, h + 1, device=device, dtype=torch.float32) / (h + 1e-6) * (2 * math.pi)
    xs = torch.arange(1, w + 1, device=device, dtype=torch.float32) / (w + 1e-6) * (2 * math.pi)
    freq = 10000.0 ** (2 * (torch.arange(half, device=device) // 2) / half)  # (half,)

    def encode(t: torch.Tensor) -> torch.Tensor:  # (n,) -> (half, n)
        p = t[None, :] / freq[:, None]
        return torch.stack([p[0::2].sin(), p[1::2].cos()], 1).flatten(0, 1)

    pos_y = encode(ys)[:, :, None].expand(-1, h, w)
    pos_x = encode(xs)[:, None, :].expand(-1, h, w)
    return torch.cat([pos_y, pos_x], 0)[None].to(dtype)


class CrossAttentionLayer(nn.Module):
    """Post-norm cross-attention + FFN (the release's `TransformerDecoderLayer`): queries of size `dim`
    attend to keys/values of size `kv_dim`; key_padding_mask (B, K) True = ignore."""

    def __init__(self, dim: int, kv_dim: int, num_heads: int, ffn_dim: int, self_attn: bool = False,
                 value_pos: bool = False):
        super().__init__()
        # ours, optional: the values carry the keys' positions too, so the query learns *where* it looked
        # (the release's values are the bare features)
        self.value_pos = value_pos
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, kdim=kv_dim, vdim=kv_dim, batch_first=True)
        self.norm_cross = nn.LayerNorm(dim)
        # ours: optional self-attention between the queries (Mask2Former's order: cross, self, FFN); the
        # release has none
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True) if self_attn else None
        self.norm_self = nn.LayerNorm(dim) if self_attn else None
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, dim))
        self.norm_ffn = nn.LayerNorm(dim)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, query: torch.Tensor, query_pos: torch.Tensor, key: torch.Tensor, key_pos: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, return_attn: bool = False):
        """query (B, Q, dim); query_pos broadcastable to it; key (B, K, kv_dim); key_pos like key.

        Returns the new query and, with `return_attn`, the cross-attention weights (B, heads, Q, K) (else
        None)."""
        value = key + key_pos if self.value_pos else key
        att, weights = self.cross_attn(query + query_pos, key + key_pos, value, key_padding_mask=key_padding_mask,
                                       need_weights=return_attn, average_attn_weights=False)
        query = self.norm_cross(query + att)
        if self.self_attn is not None:
            qk = query + query_pos
            query = self.norm_self(query + self.self_attn(qk, qk, query, need_weights=False)[0])
        query = self.norm_ffn(query + self.ffn(query))
        return query, weights


class DeformableEncoderLayer(nn.Module):
    """Post-norm deformable self-attention over all levels + FFN (Mask2Former's encoder layer)."""

    def __init__(self, dim: int, num_levels: int, num_heads: int, num_points: int, ffn_dim: int):
        super().__init__()
        self.attn = MSDeformAttn(dim, num_levels, num_heads, num_points)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, reference_points: torch.Tensor,
                shapes: Shapes) -> torch.Tensor:
        src = self.norm1(src + self.attn(src + pos, reference_points, src, shapes))
        return self.norm2(src + self.ffn(src))


def reference_points(shapes: Shapes, device=None) -> torch.Tensor:
    """Pixel centres of every level in [0, 1] (x, y), levels concatenated: (1, S, 2)."""
    points = []
    for h, w in shapes:
        y, x = torch.meshgrid((torch.arange(h, device=device) + 0.5) / h,
                              (torch.arange(w, device=device) + 0.5) / w, indexing="ij")
        points.append(torch.stack([x.flatten(), y.flatten()], -1))
    return torch.cat(points)[None]


class PixelDecoder(nn.Module):
    """Deformable encoder over strides 8/16/32 with word cross-attention, FPN fusion with stride 4.

    in_channels: the visual encoder's 4 widths (strides 4, 8, 16, 32); text_dim: the word features' size.
    """

    def __init__(self, in_channels: Sequence[int], text_dim: int, dim: int = 256, mask_dim: int = 256,
                 num_layers: int = 6, num_heads: int = 8, num_points: int = 4, ffn_dim: int = 1024,
                 word_ffn_dim: int = 2048, word_heads: int = 8, max_words: int = 20, global_attn: bool = False,
                 half_plane: int = 0):
        super().__init__()
        self.dim = dim
        # stride 32, 16, 8: the low-resolution level first, as released
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, 1), group_norm(dim)) for c in reversed(in_channels[1:])
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight)
            nn.init.zeros_(proj[0].bias)
        self.level_embed = nn.Parameter(torch.randn(3, dim))
        self.word_pos = nn.Embedding(max_words, text_dim)  # learned key positions of the words (release)
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(dim, 3, num_heads, num_points, ffn_dim) for _ in range(num_layers)
        )
        self.word_layers = nn.ModuleList(
            CrossAttentionLayer(dim, text_dim, word_heads, word_ffn_dim) for _ in range(num_layers)
        )
        # ours, optional: full self-attention over every pixel of the three levels after each deformable
        # layer. Deformable attention samples a few points near each pixel; "the second square from the left"
        # needs every square to see all the others.
        self.global_layers = nn.ModuleList(
            CrossAttentionLayer(dim, dim, num_heads, ffn_dim) for _ in range(num_layers)
        ) if global_attn else None
        # ours, optional: after each word layer, every level counts `half_plane` learned maps beyond each
        # pixel in eight directions (half_plane.py); 0 = off, the release
        self.half_plane = nn.ModuleList(
            nn.ModuleList(HalfPlaneContext(dim, half_plane) for _ in range(3)) for _ in range(num_layers)
        ) if half_plane > 0 else None
        self.lateral = nn.Sequential(nn.Conv2d(in_channels[0], dim, 1, bias=False), group_norm(dim))
        self.output = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, bias=False), group_norm(dim), nn.ReLU())
        self.mask_features = nn.Conv2d(dim, mask_dim, 1)
        for conv in (self.lateral[0], self.output[0], self.mask_features):
            nn.init.kaiming_uniform_(conv.weight, a=1)
        nn.init.zeros_(self.mask_features.bias)

    def forward(self, features: Sequence[torch.Tensor], words: torch.Tensor,
                word_mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """features: 4 maps (B, C_i, H/s, W/s) at strides 4/8/16/32; words (B, N, D); word_mask (B, N) bool.

        Returns the mask features (B, mask_dim, H/4, W/4) and the encoder's maps [stride 32, 16, 8], each
        (B, dim, h, w).
        """
        # float32 throughout, as released: sampling coordinates need more than half precision
        with torch.autocast(words.device.type, enabled=False):
            return self._forward([f.float() for f in features], words.float(), word_mask)

    def _forward(self, features: Sequence[torch.Tensor], words: torch.Tensor,
                 word_mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        n = words.shape[1]
        if n > self.word_pos.num_embeddings:
            raise ValueError(f"{n} tokens; this model takes at most {self.word_pos.num_embeddings}")
        srcs = [proj(f) for proj, f in zip(self.input_proj, reversed(features[1:]))]
        shapes: Shapes = tuple((s.shape[-2], s.shape[-1]) for s in srcs)
        src = torch.cat([s.flatten(2) for s in srcs], 2).transpose(1, 2)  # (B, S, dim)
        pos = torch.cat([
            sine_position_encoding(h, w, self.dim, src.device, src.dtype).flatten(2) + level[:, None]
            for level, (h, w) in zip(self.level_embed, shapes)
        ], 2).transpose(1, 2)  # (1, S, dim)
        refs = reference_points(shapes, src.device).to(src.dtype)  # (1, S, 2)
        word_pos = self.word_pos.weight[None, :n]  # (1, N, D)
        padding = ~word_mask
        for i, (layer, word_layer) in enumerate(zip(self.layers, self.word_layers)):
            src = layer(src, pos, refs, shapes)
            if self.global_layers is not None:
                src = self.global_layers[i](src, pos, src, pos)[0]
            src = word_layer(src, pos, words, word_pos, key_padding_mask=padding)[0]
            if self.half_plane is not None:
                maps = [ctx(m) for ctx, m in zip(self.half_plane[i], self._levels(src, shapes))]
                src = torch.cat([m.flatten(2) for m in maps], 2).transpose(1, 2)

        maps = self._levels(src, shapes)
        fine = self.lateral(features[0])  # (B, dim, H/4, W/4)
        fine = fine + F.interpolate(maps[-1], size=fine.shape[-2:], mode="bilinear", align_corners=False)
        return self.mask_features(self.output(fine)), maps

    def _levels(self, src: torch.Tensor, shapes: Shapes) -> list[torch.Tensor]:
        """(B, S, dim) tokens of all levels -> one (B, dim, h, w) map per level."""
        return [t.transpose(1, 2).reshape(src.shape[0], self.dim, h, w)
                for t, (h, w) in zip(src.split([h * w for h, w in shapes], 1), shapes)]
