"""EFN (Feng et al., CVPR 2021): referring image segmentation with language fused inside the visual encoder.

Files follow the paper's diagram: `text.py` (Bi-GRU or BERT-family words and sentence), `fusion.py` (coordinate
maps, word-pixel attention, co-attention: the encoder fusion after res3, res4, res5), `bem.py` (the decoder
with the Boundary Enhancement Module), `losses.py` (the 12-term loss), `model.py` (the model, its config and
the builders).
"""

from __future__ import annotations

from vlalign.models.efn.model import (
    EFN,
    EFN_BUILDERS,
    EFNConfig,
    efn_lite,
    efn_resnet101,
    efn_wrn101,
    training_expressions,
)

__all__ = ["EFN", "EFN_BUILDERS", "EFNConfig", "efn_lite", "efn_resnet101", "efn_wrn101", "training_expressions"]
