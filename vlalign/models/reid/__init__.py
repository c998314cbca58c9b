"""CLIP4VI-ReID (arXiv 2511.10309): visible-infrared person re-identification with CLIP text as the bridge.

Files follow the paper's pieces: `prompts.py` (per-identity learnable prompts and the text towers that read
them), `image.py` (image towers), `losses.py`, `model.py` (the model, its three training stages, config and
builders). The staged training and the evaluation protocols are the task in `vlalign/reid.py`.
"""

from __future__ import annotations

from vlalign.models.reid.model import (
    REID_BUILDERS,
    STAGES,
    CLIP4VIReID,
    CLIP4VIReIDConfig,
    clip4vireid_lite,
    clip4vireid_vitb16,
)

__all__ = ["REID_BUILDERS", "STAGES", "CLIP4VIReID", "CLIP4VIReIDConfig", "clip4vireid_lite",
           "clip4vireid_vitb16"]
