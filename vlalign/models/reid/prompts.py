"""Per-identity learnable prompts and the two text towers that read them as input embeddings.

CLIP-ReID's prompt (Syliz517/CLIP-ReID `PromptLearner`): the template "A photo of a X X X X person." is
tokenised once; the embeddings of the `n_ctx` X tokens are replaced by a learnable context per identity
(num_ids x n_ctx x width, normal std 0.02), the rest of the template (prefix, suffix, special tokens) stays fixed.
The template's token embeddings are persistent buffers, so they travel with the weights.

A text tower turns (B, L, width) input embeddings into (B, dim) text features:
- `HFPromptTower` (lite, ours): a BERT-family encoder (all-MiniLM-L6-v2) fed through `inputs_embeds` (its own
  position and token-type embeddings are added inside), mean-pooled over the template (the pooling
  sentence-transformers uses for MiniLM), then a learned linear projection to the joint space.
- `ClipPromptTower`: CLIP's text transformer, the feature of the EOT token @ text_projection (CLIP-ReID).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from vlalign.models.text import HFTextEncoder

__all__ = ["ClipPromptTower", "HFPromptTower", "PromptLearner"]


class PromptLearner(nn.Module):
    """`forward(ids (B,) long) -> (B, L, width)`: the template's embeddings with identity ids' contexts inserted.

    Args:
        template: (L, width) token embeddings of the whole template (the X slots' values are unused).
        ctx_start: index of the first X slot in the template.
        n_ctx: number of X slots (learnable tokens per identity).
        num_ids: identities (rows of the context table).
    """

    def __init__(self, template: Tensor, ctx_start: int, n_ctx: int, num_ids: int, init_std: float = 0.02):
        super().__init__()
        if not (0 < ctx_start and ctx_start + n_ctx <= template.shape[0]):
            raise ValueError(f"context slots [{ctx_start}, {ctx_start + n_ctx}) do not fit a template of "
                             f"{template.shape[0]} tokens")
        self.ctx = nn.Parameter(torch.randn(num_ids, n_ctx, template.shape[1]) * init_std)
        self.register_buffer("prefix", template[:ctx_start].detach().clone())  # (Lp, width)
        self.register_buffer("suffix", template[ctx_start + n_ctx:].detach().clone())  # (Ls, width)

    @property
    def num_ids(self) -> int:
        return self.ctx.shape[0]

    def forward(self, ids: Tensor) -> Tensor:
        b = ids.shape[0]
        return torch.cat([self.prefix.expand(b, -1, -1), self.ctx[ids], self.suffix.expand(b, -1, -1)], dim=1)


class HFPromptTower(nn.Module):
    """MiniLM/BERT text tower over input embeddings: (B, L, width) -> mean over L -> Linear -> (B, dim)."""

    def __init__(self, encoder: HFTextEncoder, dim: int):
        super().__init__()
        self.encoder = encoder
        self.proj = nn.Linear(encoder.dim, dim)

    @property
    def width(self) -> int:
        return self.encoder.dim

    @property
    def dim(self) -> int:
        return self.proj.out_features

    def head_parameters(self) -> list[nn.Parameter]:
        """Layers that are new (not pretrained): trained with the prompts."""
        return list(self.proj.parameters())

    def template(self, prefix: str, n_ctx: int, suffix: str) -> tuple[Tensor, int]:
        """[CLS] prefix X..X suffix [SEP] -> (ids (L,) long, index of the first X)."""
        tok = self.encoder.tokenizer
        pre = tok(prefix, add_special_tokens=False)["input_ids"]
        suf = tok(suffix, add_special_tokens=False)["input_ids"]
        slot = tok.mask_token_id if tok.mask_token_id is not None else tok.unk_token_id  # replaced anyway
        ids = [tok.cls_token_id, *pre, *[slot] * n_ctx, *suf, tok.sep_token_id]
        return torch.tensor(ids, dtype=torch.long), 1 + len(pre)

    def embed_ids(self, ids: Tensor) -> Tensor:
        """ids (L,) -> (L, width) word embeddings (positions are added by the encoder itself)."""
        return self.encoder.model.get_input_embeddings()(ids)

    def forward(self, embeds: Tensor) -> Tensor:
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)  # no padding in prompts
        hidden = self.encoder.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state  # (B, L, width)
        return self.proj(hidden.mean(dim=1))

    def save_config(self, path: str | Path) -> Path:
        """What `save_pretrained` stores beside the weights: the encoder's config and tokenizer."""
        return self.encoder.save_config(path)


class ClipPromptTower(nn.Module):
    """CLIP text tower over input embeddings: the EOT token's feature @ text_projection -> (B, dim).

    `clip` is the CLIP module without its image tower (the model holds that one; see `ClipImageTower`).
    """

    def __init__(self, clip: nn.Module, tokenizer, context_length: int = 77):
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.register_buffer("eot_index", torch.zeros((), dtype=torch.long))

    @property
    def width(self) -> int:
        return self.clip.token_embedding.embedding_dim

    @property
    def dim(self) -> int:
        return self.clip.text_projection.shape[1]

    def head_parameters(self) -> list[nn.Parameter]:
        return []  # CLIP's projection is pretrained: frozen with the tower (CLIP-ReID)

    def template(self, prefix: str, n_ctx: int, suffix: str) -> tuple[Tensor, int]:
        """SOT prefix X..X suffix EOT, padded to the context length -> (ids (L,), index of the first X)."""
        text = " ".join([prefix, *["X"] * n_ctx, suffix])
        ids = self.tokenizer([text], context_length=self.context_length)[0]
        # the EOT token has the largest id of the vocabulary (CLIP takes argmax to find it)
        start = int(self.tokenizer([prefix], context_length=self.context_length)[0].argmax())
        self.eot_index.fill_(int(ids.argmax()))
        return ids.long(), start

    def embed_ids(self, ids: Tensor) -> Tensor:
        return self.clip.token_embedding(ids)

    def forward(self, embeds: Tensor) -> Tensor:
        eot = self.eot_index.expand(embeds.shape[0])
        return self.clip.encode_text_embeddings(embeds, eot)
