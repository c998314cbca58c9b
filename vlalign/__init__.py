"""vlalign: aligning language with vision.

Referring image segmentation (AlignFormer, EFN), referring video segmentation (two-stream VLMG + LMDF) and
visible-infrared person re-identification (CLIP4VI-ReID), with the official data formats and metrics.
"""

__version__ = "0.1.0"
