"""What every referring segmenter shares around its own forward (ARCHITECTURE.md, "Models")."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ReferringModel(nn.Module):
    """Base of the referring segmenters: needs `self.config` (with `text_lr_mult`, optionally
    `backbone_lr_mult`), `self.backbone` (normalising inside with its `pixel_mean`/`pixel_std` buffers) and
    `self.text_encoder` (with `tokenize`)."""

    @property
    def pixel_mean(self) -> torch.Tensor:
        """(1, 3, 1, 1) in [0, 1] scale; applied inside the backbone."""
        return self.backbone.pixel_mean

    @property
    def pixel_std(self) -> torch.Tensor:
        return self.backbone.pixel_std

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.text_encoder.tokenize(texts)

    def encode_text(self, tokens: torch.Tensor, token_mask: torch.Tensor) -> Any:
        """The text encoder's output; with `config.freeze_text` it runs without autograd (no backward through
        it and no optimizer state: about a fifth of a lite training step)."""
        if getattr(self.config, "freeze_text", False):
            with torch.no_grad():
                return self.text_encoder(tokens, token_mask)
        return self.text_encoder(tokens, token_mask)

    def param_groups(self) -> list[dict[str, Any]]:
        """Groups for the engine's optimizer: the pretrained encoders at their multiples of lr, the rest at lr."""
        return [{"params": list(self.text_encoder.parameters()), "lr_mult": self.config.text_lr_mult,
                 "name": "text_encoder"},
                {"params": list(self.backbone.parameters()),
                 "lr_mult": getattr(self.config, "backbone_lr_mult", 1.0), "name": "backbone"}]
