"""Query decoder: the center embedding groups the pixels around it (AlignFormer's mask formation).

Release (mqchen1993/LGFormer `lib/mask_predictor.py`, `MSDeformDynamicConvDecoding`): the masked mean of the
word features -> Linear gives one query, the *center embedding*; a post-norm transformer decoder attends in
turn to the pixel decoder's three scales (stride 32, 16, 8, with sine positions and level embeddings); every
query state (the input and each layer's output) -> MLP -> a dynamic 1x1 kernel and bias; the mask logit of a
pixel is the dot product of that kernel with the pixel's stride-4 embedding, plus the bias.
"""

from __future__ import annotations

import torch
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
                 num_layers: int = 6, num_heads: int = 8, ffn_dim: int = 2048, self_attn: bool = True):
        super().__init__()
        self.dim, self.pixel_dim, self.mask_dim = dim, pixel_dim, mask_dim
        self.center_proj = nn.Linear(text_dim, dim)  # release `txt_proj`
        self.query_pos = nn.Embedding(1, dim)  # learned position of the single query (release `query_embed`)
        self.level_embed = nn.Embedding(3, pixel_dim)
        self.layers = nn.ModuleList(
            CrossAttentionLayer(dim, pixel_dim, num_heads, ffn_dim, self_attn=self_attn)
            for _ in range(num_layers)
        )
        # release `dynamic_conv_gen_head`: dim -> dim -> dim -> kernel (mask_dim) + bias
        self.kernel_head = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, mask_dim + 1)
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

        states = [query]
        for i, layer in enumerate(self.layers):
            level = i % len(maps)  # round robin, the coarsest scale first
            states.append(layer(states[-1], query_pos, keys[level], key_pos[level]))
        masks = [self.mask_logits(s, mask_features) for s in states]
        return [s[:, 0] for s in states], masks

    def mask_logits(self, state: torch.Tensor, mask_features: torch.Tensor) -> torch.Tensor:
        """state (B, 1, dim) -> dynamic kernel (B, 1, mask_dim) + bias -> logits (B, H/4, W/4)."""
        kernel_bias = self.kernel_head(state)
        kernel, bias = kernel_bias[..., :-1], kernel_bias[..., -1]
        logits = torch.einsum("bchw,bqc->bqhw", mask_features, kernel) + bias[..., None, None]
        return logits[:, 0]
