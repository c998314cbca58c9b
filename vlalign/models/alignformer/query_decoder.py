"""Query decoder: the center embedding groups the pixels around it (AlignFormer's mask formation).

Release (mqchen1993/LGFormer `lib/mask_predictor.py`, `MSDeformDynamicConvDecoding`): the masked mean of the
word features -> Linear gives one query, the *center embedding*; a post-norm transformer decoder attends in
turn to the pixel decoder's three scales (stride 32, 16, 8, with sine positions and level embeddings); every
query state (the input and each layer's output) -> MLP -> a dynamic 1x1 kernel and bias; the mask logit of a
pixel is the dot product of that kernel with the pixel's stride-4 embedding, plus the bias.

Ours, `attn_prior=True`: each layer's cross-attention map, one per head, scaled to a maximum of 1 and
upsampled to stride 4, is appended to the pixel embeddings that the layer's kernel reads (the kernel gets one
more weight per head; the input state, which has attended to nothing, reads zeros). The single query can
single out one object by attending to it ("the leftmost square": the squares' pixels, weighted to the
left), but the stride-4 embeddings of two identical squares are the same, so a kernel alone cannot keep one
and drop the other; the attention map says where the query looked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlalign.models.alignformer.pixel_decoder import CrossAttentionLayer, sine_position_encoding


def masked_mean(words: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
    """(B, N, D) words, (B, N) bool mask -> (B, D) mean over the real tokens."""
    m = word_mask[..., None].to(words.dtype)
    return (words * m).sum(1) / m.sum(1).clamp_min(1e-6)


class QueryDecoder(nn.Module):
    """Center embedding -> N decoder layers -> N+1 dynamic-kernel masks.

    text_dim: word features' size; dim: the query's size (release: 768 = BERT's); pixel_dim: the pixel
    decoder's maps; mask_dim: the stride-4 mask features' size (the kernel's length).
    """

    def __init__(self, text_dim: int, dim: int = 768, pixel_dim: int = 256, mask_dim: int = 256,
                 num_layers: int = 6, num_heads: int = 8, ffn_dim: int = 2048, self_attn: bool = True,
                 attn_prior: bool = False, value_pos: bool = False):
        super().__init__()
        self.attn_prior = attn_prior
        extra = num_heads if attn_prior else 0  # one kernel weight per head's attention map
        self.dim, self.pixel_dim, self.mask_dim = dim, pixel_dim, mask_dim
        self.center_proj = nn.Linear(text_dim, dim)  # release `txt_proj`
        self.query_pos = nn.Embedding(1, dim)  # learned position of the single query (release `query_embed`)
        self.level_embed = nn.Embedding(3, pixel_dim)
        self.layers = nn.ModuleList(
            CrossAttentionLayer(dim, pixel_dim, num_heads, ffn_dim, self_attn=self_attn, value_pos=value_pos)
            for _ in range(num_layers)
        )
        # release `dynamic_conv_gen_head`: dim -> dim -> dim -> kernel (mask_dim) + bias
        self.kernel_head = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, mask_dim + extra + 1)
        )

    def forward(self, words: torch.Tensor, word_mask: torch.Tensor, maps: list[torch.Tensor],
                mask_features: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """words (B, N, D); word_mask (B, N) bool; maps: the pixel decoder's [stride 32, 16, 8] maps
        (B, pixel_dim, h, w); mask_features (B, mask_dim, H/4, W/4).

        Returns the N+1 query states, each (B, dim), and their mask logits, each (B, H/4, W/4).
        """
        query = self.center_proj(masked_mean(words, word_mask))[:, None]  # (B, 1, dim)
        keys, key_pos = [], []
        for i, m in enumerate(maps):
            keys.append(m.flatten(2).transpose(1, 2) + self.level_embed.weight[i])  # (B, hw, pixel_dim)
            pe = sine_position_encoding(m.shape[-2], m.shape[-1], self.pixel_dim, m.device, m.dtype)
            key_pos.append(pe.flatten(2).transpose(1, 2))  # (1, hw, pixel_dim)
        query_pos = self.query_pos.weight[None]  # (1, 1, dim)

        states, priors = [query], [None]
        for i, layer in enumerate(self.layers):
            level = i % len(maps)  # round robin, the coarsest scale first
            state, weights = layer(states[-1], query_pos, keys[level], key_pos[level],
                                   return_attn=self.attn_prior)
            states.append(state)
            priors.append(self.attention_maps(weights, maps[level].shape[-2:], mask_features.shape[-2:])
                          if self.attn_prior else None)
        masks = [self.mask_logits(s, mask_features, p) for s, p in zip(states, priors)]
        return [s[:, 0] for s in states], masks

    @staticmethod
    def attention_maps(weights: torch.Tensor, size: tuple[int, int], out_size: tuple[int, int]) -> torch.Tensor:
        """Cross-attention weights (B, heads, 1, h*w) -> (B, heads, H/4, W/4): each map divided by its maximum,
        then upsampled bilinearly."""
        maps = weights[:, :, 0].unflatten(-1, tuple(size))
        maps = maps / maps.amax((-2, -1), keepdim=True).clamp_min(1e-12)
        return F.interpolate(maps, size=tuple(out_size), mode="bilinear", align_corners=False)

    def mask_logits(self, state: torch.Tensor, mask_features: torch.Tensor,
                    prior: torch.Tensor | None = None) -> torch.Tensor:
        """state (B, 1, dim) -> dynamic kernel (B, 1, mask_dim [+ heads]) + bias -> logits (B, H/4, W/4).

        prior: the attention maps (B, heads, H/4, W/4) read with `attn_prior` (None = zeros)."""
        kernel_bias = self.kernel_head(state)
        kernel, bias = kernel_bias[..., :-1], kernel_bias[..., -1]
        if self.attn_prior:
            kernel, prior_kernel = kernel.split([self.mask_dim, kernel.shape[-1] - self.mask_dim], -1)
        logits = torch.einsum("bchw,bqc->bqhw", mask_features, kernel) + bias[..., None, None]
        if self.attn_prior and prior is not None:
            logits = logits + torch.einsum("bkhw,bqk->bqhw", prior.to(logits.dtype), prior_kernel)
        return logits[:, 0]
