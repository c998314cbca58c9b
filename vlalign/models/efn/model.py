"""EFN — Encoder Fusion Network with Co-Attention Embedding (Feng, Hu, Zhang, Lu, CVPR 2021, arXiv 2105.01839).

    image -> visual encoder; after res3, res4 and res5 an EncoderFusion (coordinate maps, word-pixel attention,
             co-attention) with that stage's word features and the sentence feature, fed back into the encoder
          -> BoundaryDecoder: BEM at 4 levels (body / edge), skips res4, res3, res2 and a detail stem
          -> mask logits (B, H, W) at the input resolution; 12 named BCE losses in training

Where each choice comes from (paper = the CVPR paper; release = fengguang94/CEFNet@bc85899; ours = this
project, where both are silent or where we depart on purpose):
- paper: the visual encoder as a multi-modal feature learner refined by language at several stages; a
  co-attention that updates both modalities in parallel; a Boundary Enhancement Module (BEM) that makes the
  decoder attend to fine structure; ResNet-101 and a Bi-GRU text encoder.
- release: Wide-ResNet-101-2 at 320x320 with res5 at stride 16 (layer4 stride 1, dilation 1); text: embedding
  512 -> Linear+ReLU -> Bi-GRU (512 per direction), word features = the pre-GRU vectors, Linear+BN+ReLU
  mappings (a shared one, one per stage, one for the sentence; 512-d, L2-normalised), 20 tokens; fusion after
  res3/res4/res5 with the equations of fusion.py (512-d, co-attention keys 256, PReLU); decoder widths 256,
  128, 64, 32; BEM: body = an affine warp of the feature (regressed from pooled features and a context of two
  depthwise stride-2 convs, initialised to the identity), edge = feature - body, fused with the skip;
  12 equal BCE terms, edge targets a 2-pixel band (losses.py); SGD lr 1e-3.
- ours:
  * images are normalised with ImageNet mean/std buffers inside the backbone (the shared contract) instead of
    the release's learned BatchNorm2d on raw pixels; `res5_dilation=2` (backbone_kwargs) gives torchvision's
    dilated layer4 instead of the release's undilated one.
  * sentence feature = the Bi-GRU's final states (forward after the last word, backward after the first);
    the release takes the output at the last word, whose backward half has seen only that word.
  * BatchNorm of the word mappings counts real tokens only; coordinate maps put x along the width (the
    release swaps x and y).
  * co-attention: each softmax normalises over the index being summed. The release normalises both maps over
    the visual index, so its language update sums weights normalised over the *output* position.
  * decoder: the level-1 skip is a stride-2 detail stem on the image (the backbone contract exposes no stem
    output); every prediction head is CBR3 + 1x1 conv whose bias starts at the log-odds of 0.1 (the
    background-dominated pixel prior; the release starts at 0 and its final head is a 3x3 conv).
  * vocabulary: lower-cased `\\w+` words of the training expressions seen >= `vocab_min_count` times, built by
    `prepare(train_set)` (called by `vlalign.refseg.train_refseg`) and stored in the config, so that it
    travels with checkpoints and `save_pretrained` folders; optional GloVe 6B 50-d initialisation.
  * text_encoder="hf": a BERT-family encoder (words = token features, sentence = their masked mean).
  * switches for ablations: `bem=False` (no BEM: mask terms only), `fusion_l2=False` (plain residual).
  * recipe: the shared engine trains with AdamW, so `lr` is an AdamW rate (1e-4 at paper scale, untuned).
  * `efn_lite`: EfficientNet-Lite0 (real ImageNet weights) + GloVe Bi-GRU at 160x160 with narrow fusion and
    decoder widths and BCE + Dice (`dice_weight=1`, losses.py), sized for CPU training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlalign.models.backbones import build_backbone
from vlalign.models.builder import variant_config
from vlalign.models.efn.bem import BoundaryDecoder, resize
from vlalign.models.efn.fusion import EncoderFusion
from vlalign.models.efn.losses import efn_losses
from vlalign.models.efn.text import GRUTextEncoder, HFSentenceEncoder, LanguageHeads, build_vocab
from vlalign.models.segmenter import ReferringModel

FUSED_STAGES = (1, 2, 3)  # backbone stage indices of res3, res4, res5


@dataclass
class EFNConfig:
    """Everything needed to rebuild an EFN; defaults are the paper scale (`efn_resnet101`)."""

    name: str = "efn_resnet101"
    # "resnet101" | "wide_resnet101_2" | "efficientnet_lite0" | "resnet" (ResNet(**backbone_kwargs): tests)
    backbone: str = "resnet101"
    backbone_kwargs: dict[str, Any] = field(default_factory=lambda: {"res5_dilation": 1})
    pretrained_backbone: bool | str = False  # ResNets: path of a torchvision checkpoint; Lite0: True = asset
    text_encoder: str = "gru"  # "gru" (paper) or "hf" (BERT family from text_dir; None = MiniLM asset)
    vocab: list[str] | None = None  # GRU vocabulary; None until prepare(train_set) builds it
    vocab_min_count: int = 1
    text_dir: str | None = None  # hf: the transformers folder; gru: a folder with vocab.txt (if vocab is None)
    # gru: GloVe initialisation (needs embed_dim 50); hf: load the folder's weights (only efn_lite defaults to True)
    pretrained_text: bool = False
    max_tokens: int = 20
    embed_dim: int = 512
    word_dim: int = 512
    gru_dim: int = 512  # per direction
    fusion_dim: int = 512
    coattn_dim: int = 256
    fusion_l2: bool = True
    decoder_dims: list[int] = field(default_factory=lambda: [256, 128, 64, 32])  # levels 4, 3, 2, 1
    bem: bool = True
    edge_radius: int = 2
    input_size: int = 320
    mask_weight: float = 1.0
    body_weight: float = 1.0
    edge_weight: float = 1.0
    dice_weight: float = 0.0  # ours (losses.py): soft Dice over the 4 mask outputs
    # training recipe: the CLI and demo read these defaults (AdamW rates; the release used SGD 1e-3)
    lr: float = 1e-4
    text_lr_mult: float = 1.0

    def __post_init__(self):
        if self.text_encoder not in ("gru", "hf"):
            raise ValueError(f"text_encoder must be 'gru' or 'hf', got {self.text_encoder!r}")
        if len(self.decoder_dims) != 4:
            raise ValueError(f"decoder_dims needs 4 widths (levels 4..1), got {self.decoder_dims!r}")
        if self.text_encoder == "gru" and self.pretrained_text and self.embed_dim != 50:
            raise ValueError(f"pretrained_text=True starts the GRU's embedding from GloVe 6B 50-d: set "
                             f"embed_dim=50 (got {self.embed_dim}) or pretrained_text=False")


class EFN(ReferringModel):
    """`forward(image, tokens, token_mask, target=None) -> dict` (ARCHITECTURE.md).

    image (B, 3, H, W) in [0, 1]; tokens (B, L) long; token_mask (B, L) bool; target (B, H, W) in {0, 1}.
    Returns "logits" (B, H, W) and, with a target, the weighted "loss_{mask,body,edge}{1..4}" (level 1 is
    the final prediction; without BEM only the mask terms).
    """

    def __init__(self, config: EFNConfig, backbone: nn.Module, text_encoder: nn.Module, language: LanguageHeads,
                 fusion: nn.ModuleList, decoder: BoundaryDecoder):
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.text_encoder = text_encoder
        self.language = language
        self.fusion = fusion
        self.decoder = decoder

    def prepare(self, train_set) -> None:
        """Data-dependent set-up before training, called by `vlalign.refseg.train_refseg`: a GRU without a
        vocabulary builds one from the training expressions (and its embedding, GloVe-initialised when
        `pretrained_text`). A no-op when the vocabulary exists (e.g. a model from `from_pretrained`)."""
        if not isinstance(self.text_encoder, GRUTextEncoder) or self.text_encoder.has_vocab:
            return
        vocab = build_vocab(training_expressions(train_set), self.config.vocab_min_count)
        self.text_encoder.set_vocab(vocab, glove=self.config.pretrained_text)
        self.config.vocab = vocab

    def encode(self, image: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor) -> list[torch.Tensor]:
        """Visual encoder with language fused after res3, res4, res5: 4 maps (B, C_i, H/s_i, W/s_i)."""
        words, sentence = self.text_encoder(tokens, token_mask)
        stage_words, sentence = self.language(words, sentence, token_mask)

        def fuse(i: int, x: torch.Tensor) -> torch.Tensor:
            if i not in FUSED_STAGES:
                return x
            k = FUSED_STAGES.index(i)
            return self.fusion[k](x, stage_words[k], sentence, token_mask)

        return self.backbone(image, fuse=fuse)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor,
                target: torch.Tensor | None = None) -> dict[str, Any]:
        token_mask = token_mask.bool()
        features = self.encode(image, tokens, token_mask)
        normalised = (image - self.pixel_mean) / self.pixel_std  # for the decoder's detail stem
        levels = self.decoder(features, normalised, aux=target is not None)
        size = image.shape[-2:]
        out: dict[str, Any] = {"logits": resize(levels[0]["mask"], size)[:, 0]}
        if target is None:
            return out
        if target.shape != out["logits"].shape:
            raise ValueError(f"target {tuple(target.shape)}: expected (B, H, W), image {tuple(image.shape)}")
        cfg = self.config
        upsampled = [{kind: resize(v, size)[:, 0] for kind, v in level.items()} for level in levels]
        out.update(efn_losses(upsampled, target, mask_weight=cfg.mask_weight, body_weight=cfg.body_weight,
                              edge_weight=cfg.edge_weight, radius=cfg.edge_radius,
                              dice_weight=cfg.dice_weight))
        return out

    @classmethod
    def from_config(cls, config: EFNConfig) -> EFN:
        """Build every part from the config (loading the pretrained weights it names)."""
        backbone = build_backbone(config.backbone, config.backbone_kwargs, config.pretrained_backbone)
        text = _build_text_encoder(config)
        language = LanguageHeads(text.word_dim, text.sentence_dim, config.fusion_dim, len(FUSED_STAGES))
        channels = tuple(backbone.out_channels)
        fusion = nn.ModuleList(EncoderFusion(channels[i], config.fusion_dim, config.coattn_dim, config.fusion_l2)
                               for i in FUSED_STAGES)
        decoder = BoundaryDecoder(channels, tuple(config.decoder_dims), bem=config.bem)
        return cls(config, backbone, text, language, fusion, decoder)


def training_expressions(dataset) -> list[str]:
    """Every expression of a ReferDataset's split, read from its refs file (no image is opened)."""
    from vlalign.data.refer import load_refs

    if not (hasattr(dataset, "refs_path") and hasattr(dataset, "split")):
        raise TypeError(f"cannot read the expressions of a {type(dataset).__name__}: pass a ReferDataset, or "
                        f"build the model with vocab=[...]")
    return [s["sent"] for ref in load_refs(dataset.refs_path) if ref["split"] == dataset.split
            for s in ref["sentences"]]


def _build_text_encoder(config: EFNConfig) -> nn.Module:
    if config.text_encoder == "hf":
        return HFSentenceEncoder.from_dir(config.text_dir, pretrained=config.pretrained_text,
                                          max_tokens=config.max_tokens)
    if config.vocab is None and config.text_dir and (Path(config.text_dir) / "vocab.txt").is_file():
        words = (Path(config.text_dir) / "vocab.txt").read_text().split()
        config.vocab = words if len(words) > 2 else None  # [PAD, UNK] alone: a folder saved before prepare
    return GRUTextEncoder(config.vocab, config.embed_dim, config.word_dim, config.gru_dim, config.max_tokens,
                          glove=config.pretrained_text)


def _efn(name: str, overrides: dict[str, Any], **variant: Any) -> EFN:
    """The one private builder: paper defaults < the variant's numbers < the caller's overrides."""
    config = variant_config(EFNConfig, name, overrides, variant, "EFN")
    return EFN.from_config(config)


def efn_resnet101(**overrides: Any) -> EFN:
    """Paper: ResNet-101 + Bi-GRU, 320x320 (backbone weights: pretrained_backbone=<torchvision .pth>)."""
    return _efn("efn_resnet101", overrides)


def efn_wrn101(**overrides: Any) -> EFN:
    """Release: Wide-ResNet-101-2 + Bi-GRU, 320x320 (pretrained_backbone=<torchvision .pth>)."""
    return _efn("efn_wrn101", overrides, backbone="wide_resnet101_2")


def efn_lite(**overrides: Any) -> EFN:
    """EfficientNet-Lite0 (real ImageNet weights) + Bi-GRU over GloVe 50-d words, 160x160, narrow fusion and
    decoder, BCE + Dice: sized to train on a 2-core CPU (benchmarks/results/learning_efn_lite.md)."""
    return _efn(
        "efn_lite", overrides, backbone="efficientnet_lite0", backbone_kwargs={"drop_path_rate": 0.1},
        pretrained_backbone=True, pretrained_text=True, embed_dim=50, word_dim=128, gru_dim=128,
        fusion_dim=64, coattn_dim=32, decoder_dims=[96, 64, 32, 16], input_size=160, lr=3e-4, dice_weight=1.0,
    )


EFN_BUILDERS: dict[str, Callable[..., EFN]] = {
    "efn_resnet101": efn_resnet101,
    "efn_wrn101": efn_wrn101,
    "efn_lite": efn_lite,
}
