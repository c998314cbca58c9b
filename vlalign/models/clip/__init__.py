"""CLIP (Radford et al., ICML 2021) in plain torch: image towers (ViT, ModifiedResNet), text transformer, BPE
tokenizer, and loaders for OpenAI, open_clip and Hugging Face checkpoints (all from local files).

    from vlalign.models.clip import ClipTokenizer, load_clip
    clip = load_clip("ViT-B-16.pt", image_size=(288, 144))
    feats = clip.encode_text(ClipTokenizer()(["a photo of a person."]))
"""

from vlalign.models.clip.convert import (
    CLIP_TOLERATED,
    build_clip,
    hf_to_openai,
    infer_clip_config,
    load_clip,
    read_torchscript_state_dict,
    resize_pos_embed,
)
from vlalign.models.clip.model import CLIP, CLIP_MEAN, CLIP_STD, ClipConfig, VisionTransformer, tiny_clip_config
from vlalign.models.clip.resnet import ModifiedResNet
from vlalign.models.clip.tokenizer import EOT_TOKEN, SOT_TOKEN, ClipTokenizer

__all__ = ["CLIP", "ClipConfig", "VisionTransformer", "ModifiedResNet", "ClipTokenizer", "build_clip", "load_clip",
           "infer_clip_config", "hf_to_openai", "read_torchscript_state_dict", "resize_pos_embed", "tiny_clip_config",
           "CLIP_TOLERATED", "CLIP_MEAN", "CLIP_STD", "SOT_TOKEN", "EOT_TOKEN"]
