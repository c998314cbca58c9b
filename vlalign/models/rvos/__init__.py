"""Referring video object segmentation: the two-stream encoder with VLMG and LMDF (arXiv 2203.15969)."""

from vlalign.models.rvos.decoder import FPNDecoder, Lateral
from vlalign.models.rvos.lmdf import LMDF
from vlalign.models.rvos.model import RVOS_BUILDERS, RVOSConfig, TwoStreamRVOS, twostream_lite, twostream_r101
from vlalign.models.rvos.vlmg import VLMG, text_stage_layers

__all__ = ["RVOS_BUILDERS", "RVOSConfig", "TwoStreamRVOS", "twostream_r101", "twostream_lite", "VLMG", "LMDF",
           "FPNDecoder", "Lateral", "text_stage_layers"]
