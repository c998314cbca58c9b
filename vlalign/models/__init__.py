"""Models: backbones (`vlalign.models.backbones`), the text encoder (`vlalign.models.text`), the segmenters
(`vlalign.models.alignformer`, ...) and safe, strict checkpoint loading (`vlalign.models.loading`).

Nothing heavy is imported here (transformers takes seconds): import the submodule you need.
"""

from __future__ import annotations

from vlalign.models.loading import (
    CheckpointMismatch,
    LoadReport,
    NotACheckpoint,
    load_strict,
    read_state_dict,
)

__all__ = ["CheckpointMismatch", "LoadReport", "NotACheckpoint", "load_strict", "read_state_dict"]
