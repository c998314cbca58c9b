"""AlignFormer (arXiv 2301.06429 v1, later LGFormer): referring image segmentation by grouping pixels around a
linguistic *center embedding*, with language fused inside the visual encoder by VLBA.

    image -> visual encoder, VLBA after each of its 4 stages <-> words (text encoder)
          -> pixel decoder (deformable attention at strides 8/16/32, pixels attend to words; FPN -> stride 4)
          -> query decoder (center embedding attends to the 3 scales) -> dynamic kernel . pixel embeddings
          -> mask logits (B, H, W), one per query state (deep supervision)

Where each choice comes from (paper = arXiv abstract; release = mqchen1993/LGFormer@ea4800e; ours = this
project, where both are silent or where we depart on purpose):
- paper: center embedding grouping pixels; VLBA both ways; cross-modal instance contrastive loss.
- release: Swin (window 12, drop-path 0.3) and BERT-base with <= 20 tokens; VLBA equations (vlba.py), one
  head; the decoders read each stage's VLBA output `vis_res` (through Swin's per-stage norm `norm{i}`) and
  the last stage's word residual `lang_res`; pixel decoder: 6 deformable layers (256-d, 8 heads, 4 points,
  FFN 1024, post-norm, GroupNorm(32) input projections, sine positions + level embeddings), each followed by
  pixels cross-attending to the words (learned word positions, FFN 2048), FPN with the stride-4 feature;
  center embedding = masked mean of the words -> Linear; query decoder: 6 post-norm layers (768-d, 8 heads,
  FFN 2048) over the scales stride 32, 16, 8 in turn; kernel MLP 768-768-768-257; masks upsampled
  bilinearly to the input; BCE with pos_weight 1.1 summed over all 7 outputs; no dropout; prediction = last
  output.
- ours:
  * gates: only their last layer is zero-initialised (vlba.TanhGate explains why the release's all-zero
    gates never open); `vlba_gate_zero_init="all"` restores the release.
  * the last stage's VLBA has no gates: nothing reads its gated outputs when the decoders take `vis_res`
    (the release computes them and throws them away).
  * `decoder_features="backbone"`: an alternative wiring that follows the gated path (the backbone's own
    outputs and the final gated words) instead of the release's `vis_res`/`lang_res`.
  * the query decoder keeps a self-attention step (Mask2Former's layer order; with one query it is a learned
    linear residual); `query_self_attn=False` is the release.
  * options, all off (no gain measured at 400 and 640 iterations, benchmarks/README.md): `query_attn_prior`
    (the query's attention maps as extra kernel inputs), `query_value_pos` (sine positions in the query's
    values), `pixel_global_attn` (full pixel self-attention after each deformable layer),
    `pixel_half_plane` (each pixel counts learned maps beyond it in 8 directions, half_plane.py; 0.328 vs
    0.360 at 400 iterations).
  * deformable attention in pure PyTorch (ms_deform_attn.py) instead of the release's compiled CUDA op.
  * the contrastive loss entirely (losses.py): regions, terms, its own projection of the last query state to
    mask_dim, a learnable temperature (0.07 as in CLIP); weight `contrast_weight` = 0.1 (untuned; 0 skips it).
  * image normalisation is done once, inside the backbone, with its non-persistent `pixel_mean`/`pixel_std`
    buffers (exposed here as properties): the model takes [0, 1] images.
  * the "lite" variant: EfficientNet-Lite0 + all-MiniLM-L6-v2 (offline assets, 384-d words), 160x160,
    128-d pixel decoder (3 layers, FFN 256), 256-d query decoder (3 layers), 64-d mask features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlalign.models.alignformer.losses import InstanceContrastiveLoss, bce_loss, dice_loss
from vlalign.models.alignformer.pixel_decoder import PixelDecoder
from vlalign.models.alignformer.query_decoder import QueryDecoder
from vlalign.models.alignformer.vlba import VLBA
from vlalign.models.backbones import build_backbone
from vlalign.models.builder import require_text_dir, variant_config
from vlalign.models.segmenter import ReferringModel
from vlalign.models.text import HFTextEncoder


@dataclass
class AlignFormerConfig:
    """Everything needed to rebuild an AlignFormer; defaults are the paper scale (`alignformer_swin_b`)."""

    name: str = "alignformer_swin_b"
    # visual encoder: a SWIN_BUILDERS name, "efficientnet_lite0", or "swin" (SwinTransformer(**kwargs))
    backbone: str = "swin_base"
    backbone_kwargs: dict[str, Any] = field(default_factory=lambda: dict(window_size=12, drop_path_rate=0.3))
    pretrained_backbone: bool | str = False  # Swin: path of an official checkpoint; Lite0: True = the asset
    text_dir: str | None = None  # transformers folder (config + tokenizer [+ weights]); None = MiniLM asset
    pretrained_text: bool = True
    max_tokens: int = 20
    input_size: int = 480
    vlba_heads: int = 1
    vlba_gate_zero_init: str = "output"  # "all" = release (gates never open)
    decoder_features: str = "vlba"  # "vlba" = release (VLBA outputs); "backbone" = the gated path
    pixel_dim: int = 256
    pixel_layers: int = 6
    pixel_heads: int = 8
    pixel_points: int = 4
    pixel_ffn_dim: int = 1024
    word_ffn_dim: int = 2048
    pixel_global_attn: bool = False  # ours: full self-attention between the pixels too (pixel_decoder.py)
    pixel_half_plane: int = 0  # ours: maps counted beyond each pixel in 8 directions (half_plane.py); 0 = off
    query_dim: int = 768
    query_layers: int = 6
    query_heads: int = 8
    query_ffn_dim: int = 2048
    query_self_attn: bool = True
    query_attn_prior: bool = False  # ours: the query's attention maps as extra kernel inputs (query_decoder.py)
    query_value_pos: bool = False  # ours: the query reads the pixels' sine positions with their features
    mask_dim: int = 256
    bce_weight: float = 1.0
    bce_pos_weight: float = 1.1
    dice_weight: float = 0.0  # ours; 0 = the release's BCE-only objective
    contrast_weight: float = 0.1
    contrast_instance_weight: float = 1.0
    contrast_temperature: float = 0.07
    contrast_erode: int = 1
    contrast_dilate: int = 1
    # training recipe (release: AdamW 5e-5 for every parameter); the CLI and demo read these defaults
    lr: float = 5e-5
    text_lr_mult: float = 1.0
    backbone_lr_mult: float = 1.0
    freeze_text: bool = False  # ours: the pretrained text encoder as a fixed feature extractor

    def __post_init__(self):
        if self.decoder_features not in ("vlba", "backbone"):
            raise ValueError(f"decoder_features must be 'vlba' or 'backbone', got {self.decoder_features!r}")
        if self.pixel_half_plane < 0:
            raise ValueError(f"pixel_half_plane is a number of maps (0 = off), got {self.pixel_half_plane}")


class AlignFormer(ReferringModel):
    """`forward(image, tokens, token_mask, target=None) -> dict` (ARCHITECTURE.md).

    image (B, 3, H, W) in [0, 1]; tokens (B, N) long; token_mask (B, N) bool; target (B, H, W) in {0, 1}.
    Returns "logits" (B, H, W) from the last query state, "aux_logits" (N_layers tensors (B, H, W), the
    earlier states), and with a target the weighted "loss_bce" and (weight > 0) "loss_contrast".
    """

    def __init__(self, config: AlignFormerConfig, backbone: nn.Module, text_encoder: HFTextEncoder,
                 vlba: nn.ModuleList, pixel_decoder: PixelDecoder, query_decoder: QueryDecoder,
                 contrast: InstanceContrastiveLoss):
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.text_encoder = text_encoder
        self.vlba = vlba
        self.pixel_decoder = pixel_decoder
        self.query_decoder = query_decoder
        self.contrast = contrast

    def _stage_norm(self, i: int, x: torch.Tensor) -> torch.Tensor:
        # release: Swin's per-stage output norm is applied to the VLBA output that the decoder reads
        norm = getattr(self.backbone, f"norm{i}", None)
        if isinstance(norm, nn.LayerNorm):
            return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x

    def encode(self, image: torch.Tensor, tokens: torch.Tensor,
               token_mask: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Visual encoder with VLBA after each stage: 4 maps (B, C_i, H/s, W/s) and words (B, N, D)."""
        words = self.encode_text(tokens, token_mask)  # (B, N, D)
        fused: list[torch.Tensor] = []
        state = {"words": words, "lang_res": words}

        def fuse(i: int, x: torch.Tensor) -> torch.Tensor:
            out = self.vlba[i](x, state["words"], token_mask)
            state["words"], state["lang_res"] = out.words, out.lang_res
            fused.append(self._stage_norm(i, out.vis_res))
            return out.x

        features = self.backbone(image, fuse=fuse)
        if self.config.decoder_features == "vlba":
            return fused, state["lang_res"]
        return features, state["words"]

    def forward(self, image: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor,
                target: torch.Tensor | None = None) -> dict[str, Any]:
        token_mask = token_mask.bool()
        features, words = self.encode(image, tokens, token_mask)
        mask_features, maps = self.pixel_decoder(features, words, token_mask)  # (B, mask_dim, H/4, W/4)
        states, masks = self.query_decoder(words, token_mask, maps, mask_features)  # N+1 x (B, H/4, W/4)
        size = image.shape[-2:]
        logits = F.interpolate(torch.stack(masks, 1), size=size, mode="bilinear", align_corners=False)
        out: dict[str, Any] = {"logits": logits[:, -1], "aux_logits": list(logits[:, :-1].unbind(1))}
        if target is None:
            return out

        cfg = self.config
        target = target.to(logits.dtype)
        if target.shape != logits[:, -1].shape:
            raise ValueError(f"target {tuple(target.shape)}: expected (B, H, W), image {tuple(image.shape)}")
        out["loss_bce"] = cfg.bce_weight * bce_loss(list(logits.unbind(1)), target, cfg.bce_pos_weight)
        if cfg.dice_weight > 0:
            out["loss_dice"] = cfg.dice_weight * dice_loss(list(logits.unbind(1)), target)
        if cfg.contrast_weight > 0:
            parts = self.contrast(mask_features, states[-1], target)
            contrast = parts["contrast_pixel"] + cfg.contrast_instance_weight * parts["contrast_instance"]
            out["loss_contrast"] = cfg.contrast_weight * contrast
        return out

    @classmethod
    def from_config(cls, config: AlignFormerConfig) -> AlignFormer:
        """Build every part from the config (loading the pretrained weights it names)."""
        backbone = build_backbone(config.backbone, config.backbone_kwargs, config.pretrained_backbone)
        text = HFTextEncoder.from_dir(config.text_dir, pretrained=config.pretrained_text,
                                      max_tokens=config.max_tokens)
        text.requires_grad_(not config.freeze_text)
        channels, d = tuple(backbone.out_channels), text.dim
        gated = [config.decoder_features == "backbone" or i < len(channels) - 1 for i in range(len(channels))]
        vlba = nn.ModuleList(
            VLBA(c, d, config.vlba_heads, gated=g, gate_zero_init=config.vlba_gate_zero_init)
            for c, g in zip(channels, gated)
        )
        pixel_decoder = PixelDecoder(
            channels, d, dim=config.pixel_dim, mask_dim=config.mask_dim, num_layers=config.pixel_layers,
            num_heads=config.pixel_heads, num_points=config.pixel_points, ffn_dim=config.pixel_ffn_dim,
            word_ffn_dim=config.word_ffn_dim, word_heads=config.pixel_heads, max_words=config.max_tokens,
            global_attn=config.pixel_global_attn, half_plane=config.pixel_half_plane,
        )
        query_decoder = QueryDecoder(
            d, dim=config.query_dim, pixel_dim=config.pixel_dim, mask_dim=config.mask_dim,
            num_layers=config.query_layers, num_heads=config.query_heads, ffn_dim=config.query_ffn_dim,
            self_attn=config.query_self_attn, attn_prior=config.query_attn_prior,
            value_pos=config.query_value_pos,
        )
        contrast = InstanceContrastiveLoss(config.query_dim, config.mask_dim, config.contrast_temperature,
                                           config.contrast_erode, config.contrast_dilate)
        return cls(config, backbone, text, vlba, pixel_decoder, query_decoder, contrast)


def _alignformer(name: str, overrides: dict[str, Any], **variant: Any) -> AlignFormer:
    """The one private builder: paper defaults < the variant's numbers < the caller's overrides.

    Variants with BERT-base (the paper's text encoder) need `text_dir`: it cannot be downloaded here."""
    config = variant_config(AlignFormerConfig, name, overrides, variant, "AlignFormer")
    require_text_dir(config, name, variant)
    return AlignFormer.from_config(config)


def alignformer_swin_b(**overrides: Any) -> AlignFormer:
    """Paper scale: Swin-B (window 12) + BERT-base from `text_dir`, 480x480."""
    return _alignformer("alignformer_swin_b", overrides)


def alignformer_swin_t(**overrides: Any) -> AlignFormer:
    """Swin-T + BERT-base from `text_dir`, otherwise the paper scale."""
    return _alignformer("alignformer_swin_t", overrides, backbone="swin_tiny")


def alignformer_lite(**overrides: Any) -> AlignFormer:
    """EfficientNet-Lite0 + all-MiniLM-L6-v2 (offline assets, real weights) and a small decoder at 160x160,
    sized for training on a 2-core CPU (benchmarks/results/learning_alignformer_lite.md).

    Recipe (ours): new layers at AdamW 6e-4, the pretrained image encoder at 0.25x and MiniLM at 0.05x; on
    the synthetic benchmark this learns faster per minute than 2e-4 everywhere, and 160x160 at batch 12
    beats 192x192 at batch 8 for the same time (more epochs)."""
    return _alignformer(
        "alignformer_lite", overrides, backbone="efficientnet_lite0", backbone_kwargs={"drop_path_rate": 0.1},
        pretrained_backbone=True, text_dir=None, input_size=160, pixel_dim=128, pixel_layers=3,
        pixel_ffn_dim=256, word_ffn_dim=256, query_dim=256, query_layers=3, query_ffn_dim=512, mask_dim=64,
        dice_weight=1.0, lr=6e-4, backbone_lr_mult=0.25, text_lr_mult=0.05,
    )


ALIGNFORMER_BUILDERS: dict[str, Callable[..., AlignFormer]] = {
    "alignformer_swin_b": alignformer_swin_b,
    "alignformer_swin_t": alignformer_swin_t,
    "alignformer_lite": alignformer_lite,
}


def build_alignformer(name: str, **overrides: Any) -> AlignFormer:
    if name not in ALIGNFORMER_BUILDERS:
        raise ValueError(f"unknown AlignFormer {name!r}; available: {sorted(ALIGNFORMER_BUILDERS)}")
    return ALIGNFORMER_BUILDERS[name](**overrides)
