"""AlignFormer (arXiv 2301.06429 v1): referring image segmentation around a linguistic center embedding.

Files follow the paper's diagram: `vlba.py` (fusion inside the visual encoder), `ms_deform_attn.py` and
`pixel_decoder.py`, `query_decoder.py` (center embedding -> dynamic kernels), `losses.py`, `model.py` (the
model, its config and the builders).
"""

from __future__ import annotations

from vlalign.models.alignformer.model import (
    ALIGNFORMER_BUILDERS,
    AlignFormer,
    AlignFormerConfig,
    alignformer_lite,
    alignformer_swin_b,
    alignformer_swin_t,
    build_alignformer,
)

__all__ = ["ALIGNFORMER_BUILDERS", "AlignFormer", "AlignFormerConfig", "alignformer_lite",
           "alignformer_swin_b", "alignformer_swin_t", "build_alignformer"]
