"""Data reading: images, COCO masks, refer-format datasets, transforms with inverses, and collation."""

from vlalign.data.collate import ReferCollate, make_collate
from vlalign.data.images import DEFAULT_MAX_PIXELS, ImageError, load_image, load_mask_png
from vlalign.data.masks import decode_segmentation, polygons_to_mask, rle_to_mask
from vlalign.data.refer import KNOWN_SPLITS, ReferDataset, load_instances, load_refs
from vlalign.data.transforms import Letterbox, ResizeSquare, identity_params, invert_prediction, pil_to_tensor

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "KNOWN_SPLITS",
    "ImageError",
    "Letterbox",
    "ReferCollate",
    "ReferDataset",
    "ResizeSquare",
    "decode_segmentation",
    "identity_params",
    "invert_prediction",
    "load_image",
    "load_instances",
    "load_mask_png",
    "load_refs",
    "make_collate",
    "pil_to_tensor",
    "polygons_to_mask",
    "rle_to_mask",
]
