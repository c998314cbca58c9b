"""VLBA: Vision-Language Bidirectional Attention, the fusion after every visual-encoder stage.

With X the visual tokens (HW x C), L the words (N x D), m the padding mask and IN instance norm over the
tokens (release: mqchen1993/LGFormer `lib/backbone.py`, `VLBA` and `VisionLanguageAttention`):

    A      = IN(Wq X) (Wk L)^T / sqrt(C)                         (HW x N), padded words masked out
    V_aux  = IN(Wo softmax_words(A) Wv L)                         words -> pixels
    L_aux  = Wso softmax_pixels(A^T) IN(Wsv X), masked            pixels -> words (same map, transposed)
    vis_res  = MLP([GELU(W X); V_aux])      lang_res = MLP([GELU(W' L) m; L_aux]) m
    X <- X + gate(vis_res) vis_res          L <- (L + gate'(lang_res) lang_res) m

The release writes every projection as a 1x1 `Conv1d` on (B, C, HW); here they are `nn.Linear` on the
channel-last (B, HW, C) layout, the same maps with less transposing.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


def token_instance_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """`nn.InstanceNorm1d` (no affine) on (B, T, C): every channel normalised over the T tokens."""
    var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps)


def _mlp(in_dim: int, dim: int) -> nn.Sequential:
    """The release's `project_mm`: two 1x1 convs, each followed by GELU."""
    return nn.Sequential(nn.Linear(in_dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU())


class TanhGate(nn.Module):
    """Linear-ReLU-Linear-Tanh, output 0 at initialisation.

    zero_init="all" is the release (both weights zero). Then nothing can ever leave zero: the first layer's
    output is 0 so the second gets no gradient, and the second is 0 so the first gets none -- the gates of
    the release stay shut for the whole training. zero_init="output" (ours, default) zeroes only the second
    weight: the gate still starts shut, and opens as the loss asks.
    """

    def __init__(self, dim: int, zero_init: str = "output"):
        super().__init__()
        if zero_init not in ("output", "all"):
            raise ValueError(f"zero_init must be 'output' or 'all', got {zero_init!r}")
        self.net = nn.Sequential(nn.Linear(dim, dim, bias=False), nn.ReLU(), nn.Linear(dim, dim, bias=False),
                                 nn.Tanh())
        nn.init.zeros_(self.net[2].weight)
        if zero_init == "all":
            nn.init.zeros_(self.net[0].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class VLBAOutput(NamedTuple):
    x: torch.Tensor  # (B, C, H, W) gated visual features, continue through the visual encoder
    words: torch.Tensor  # (B, N, D) gated word features, go to the next stage
    vis_res: torch.Tensor  # (B, C, H, W) fused visual residual (the release feeds it to the decoder)
    lang_res: torch.Tensor  # (B, N, D) fused word residual (the release's last one feeds the decoder)


class VLBA(nn.Module):
    """Bidirectional vision-language attention for one stage.

    vis_dim C: the stage's channels; lang_dim D: the word features' size. `gated=False` builds no gates and
    returns x and words unchanged (for the last stage, whose gated outputs nothing reads).
    """

    def __init__(self, vis_dim: int, lang_dim: int, num_heads: int = 1, gated: bool = True,
                 gate_zero_init: str = "output"):
        super().__init__()
        if vis_dim % num_heads or lang_dim % num_heads:
            raise ValueError(f"vis_dim {vis_dim} and lang_dim {lang_dim} must divide into {num_heads} heads")
        self.vis_dim, self.lang_dim, self.num_heads = vis_dim, lang_dim, num_heads
        self.query = nn.Linear(vis_dim, vis_dim)  # Wq, followed by IN
        self.key = nn.Linear(lang_dim, vis_dim)  # Wk
        self.value = nn.Linear(lang_dim, vis_dim)  # Wv
        self.out = nn.Linear(vis_dim, vis_dim)  # Wo, followed by IN
        self.sym_value = nn.Linear(vis_dim, lang_dim)  # Wsv, followed by IN
        self.sym_out = nn.Linear(lang_dim, lang_dim)  # Wso
        self.vis_project = nn.Linear(vis_dim, vis_dim)
        self.lang_project = nn.Linear(lang_dim, lang_dim)
        self.vis_mlp = _mlp(2 * vis_dim, vis_dim)
        self.lang_mlp = _mlp(2 * lang_dim, lang_dim)
        self.vis_gate = TanhGate(vis_dim, gate_zero_init) if gated else None
        self.lang_gate = TanhGate(lang_dim, gate_zero_init) if gated else None

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        return t.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)  # (B, h, n, c/h)

    def _merge(self, t: torch.Tensor) -> torch.Tensor:
        b, h, n, c = t.shape
        return t.transpose(1, 2).reshape(b, n, h * c)

    def forward(self, x: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor) -> VLBAOutput:
        """x (B, C, H, W) visual features; words (B, N, D); word_mask (B, N) bool, True = real token."""
        b, c, h, w = x.shape
        tokens = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # (B, HW, C); free for channel-last memory (Swin)
        m = word_mask[:, :, None].to(words.dtype)  # (B, N, 1)

        q = self._heads(token_instance_norm(self.query(tokens)))  # (B, h, HW, C/h)
        k = self._heads(self.key(words))  # (B, h, N, C/h)
        v = self._heads(self.value(words))  # (B, h, N, C/h)
        attn = q @ k.transpose(-1, -2) * c**-0.5  # (B, h, HW, N); release scales by the full C
        keep = word_mask[:, None, None, :]
        # words -> pixels: -inf (exactly 0 after softmax, no denormals) on padded words
        to_pixels = attn.masked_fill(~keep, float("-inf")).softmax(-1)
        vis_aux = token_instance_norm(self.out(self._merge(to_pixels @ v)))  # (B, HW, C)

        # pixels -> words: softmax over pixels of the same raw map; rows of padded words are zeroed after
        sv = self._heads(token_instance_norm(self.sym_value(tokens)))  # (B, h, HW, D/h)
        to_words = attn.transpose(-1, -2).softmax(-1)  # (B, h, N, HW)
        lang_aux = self.sym_out(self._merge(to_words @ sv) * m)  # (B, N, D)

        vis = F.gelu(self.vis_project(tokens))
        vis_res = self.vis_mlp(torch.cat([vis, vis_aux], -1))  # (B, HW, C)
        lang = F.gelu(self.lang_project(words)) * m
        lang_res = self.lang_mlp(torch.cat([lang, lang_aux * m], -1)) * m  # (B, N, D)

        if self.vis_gate is not None:
            tokens = tokens + self.vis_gate(vis_res) * vis_res
            words = (words + self.lang_gate(lang_res) * lang_res) * m

        def grid(t: torch.Tensor) -> torch.Tensor:  # (B, HW, C) -> (B, C, H, W) view, channel-last memory
            return t.view(b, h, w, c).permute(0, 3, 1, 2)

        return VLBAOutput(grid(tokens), words, grid(vis_res), lang_res)
