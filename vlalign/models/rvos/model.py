"""Two-stream referring video segmentation: "Deeply Interleaved Two-Stream Encoder for Referring Video
Segmentation" (Feng, Zhang, Hu, Lu; arXiv 2203.15969; leaderboards call it VLIDE).

    frames (B, T, 3, H, W) -> folded to (B*T, 3, H, W) -> CNN visual stream, stage by stage
    tokens -> text embeddings -> text stage i (a group of transformer layers) -> words
    after visual stage i: VLMG i (pixels <- words through the backbone's fuse hook; words <- clip pixels,
                          handed to text stage i + 1)
    coarse stages -> LMDF (language-guided spatio-temporal dynamic filters, several dilations)
    all stages -> FPN decoder (stride 4, sentence FiLM) -> logits, upsampled to (B, T, H, W)

Where each choice comes from. paper = the arXiv abstract (the full text and code are not public, see
shared/reference/rvos.md); everything else is **ours**:
- paper: a CNN visual stream and a transformer linguistic stream, both hierarchical; VLMG inserted several
  times for progressive fusion with multi-granularity linguistic context; LMDF generating position-specific
  dynamic filters from language-guided spatio-temporal features to update the current frame's feature.
- ours:
  * streams: ResNet-101 (torchvision keys) + BERT-base from a local folder at paper scale (`twostream_r101`),
    EfficientNet-Lite0 + all-MiniLM-L6-v2 (real offline weights) for CPU training (`twostream_lite`).
  * linguistic stages: the text layers split evenly over the 4 visual stages, the remainder to the last
    stages (vlmg.text_stage_layers): BERT-base 3-3-3-3, MiniLM 1-1-2-2.
  * VLMG = the project's bidirectional attention (alignformer.vlba.VLBA, gated residuals, one head) over the
    clip: the T frames share one set of words (vlmg.py).
  * LMDF on stages 3 and 4 (`lmdf_stages`), 3-D conv context over the features, an RGB-difference motion cue
    and the cell coordinates; 3x3 kernels at dilations 1, 2, 3, softmax over the taps, kernels shared within
    channel groups (lmdf.py). `lmdf=False` uses plain laterals: with `num_frames=1` that is the single-frame
    control.
  * sentence = masked mean of the final (vision-guided) words; it conditions LMDF and the decoder (FiLM).
  * loss: BCE + soft Dice (alignformer.losses) over the frames marked `valid` (annotated), equal weights.
  * `query_decoder=True` replaces the single-mask head by per-object queries over the clip, each with a mask
    and a score that reads the object's measured trajectory and colour; every annotated object of the clip is
    matched to a query and supervised, the referred one is the score's positive, and the score also learns
    to choose among the clip's true objects for every sentence of the video (queries.py).
  * the clip is the unit: every frame of a clip is predicted from the whole clip; inference on long videos
    runs a sliding window (vlalign.video_predictor).
  * several expressions of one video run as one batch over the same decoded, resized frames. The visual
    stream is *not* shared between them: language enters after the first visual stage, so every stage's
    output depends on the sentence, and the backbone contract runs all stages in one call.
  * recipe: AdamW; paper scale 320x320, T = 5, lr 1e-4 with both pretrained streams at 0.1x (untuned);
    lite 128x128, T = 3 frames 2 apart (`frame_stride`: a slow object moves a few pixels between stored
    frames, too little for the coarse stages), LMDF also on stage 2 (stride 8), the query decoder (it beat the
    single-mask head, benchmarks/README.md, Video), lr 6e-4, backbone 0.25x, MiniLM 0.05x (alignformer_lite's
    multiples); sized for 2 CPU cores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlalign.models.alignformer.losses import bce_loss, dice_loss
from vlalign.models.alignformer.query_decoder import masked_mean
from vlalign.models.backbones import build_backbone
from vlalign.models.builder import require_text_dir, variant_config
from vlalign.models.rvos.decoder import FPNDecoder, Lateral
from vlalign.models.rvos.lmdf import LMDF, rgb_difference
from vlalign.models.rvos.queries import QueryDecoder, object_masks, query_losses, selection_loss
from vlalign.models.rvos.vlmg import VLMG, text_stage_layers
from vlalign.models.segmenter import ReferringModel
from vlalign.models.text import HFTextEncoder

__all__ = ["RVOSConfig", "TwoStreamRVOS", "RVOS_BUILDERS", "twostream_r101", "twostream_lite"]


@dataclass
class RVOSConfig:
    """Everything needed to rebuild a two-stream model; defaults are the paper scale (`twostream_r101`)."""

    name: str = "twostream_r101"
    # "resnet101" | "wide_resnet101_2" | "efficientnet_lite0" | "resnet" (ResNet(**backbone_kwargs): tests)
    backbone: str = "resnet101"
    backbone_kwargs: dict[str, Any] = field(default_factory=lambda: {"res5_dilation": 2})
    pretrained_backbone: bool | str = False  # ResNets: path of a torchvision checkpoint; Lite0: True = asset
    text_dir: str | None = None  # transformers folder; None = the MiniLM asset
    pretrained_text: bool = True
    max_tokens: int = 20
    input_size: int = 320
    num_frames: int = 5  # frames per training clip (and the inference window)
    frame_stride: int = 1  # video frames between a clip's frames, in training and inference (VideoSegmenter)
    text_stage_layers: list[int] | None = None  # text layers per visual stage; None = even split (vlmg.py)
    vlmg_heads: int = 1
    vlmg_gate_zero_init: str = "output"
    lmdf: bool = True
    lmdf_stages: list[int] = field(default_factory=lambda: [2, 3])
    lmdf_kernel: int = 3
    lmdf_dilations: list[int] = field(default_factory=lambda: [1, 2, 3])
    lmdf_groups: int = 8
    lmdf_motion: bool = True  # LMDF's RGB-difference motion cue (lmdf.py)
    decoder_dim: int = 256
    # per-object query decoder (queries.py, ours): N queries, each one object's masks over the clip + a score
    query_decoder: bool = False
    num_queries: int = 6
    query_layers: int = 2
    score_weight: float = 2.0
    instance_weight: float = 1.0  # the clip's other annotated objects, matched to the remaining queries
    match_score_cost: float = 0.0  # the score's weight in the matching of the referred object (queries.py)
    query_aux_head: bool = True  # keep the single-mask head beside the queries as an auxiliary loss (queries.py)
    select_weight: float = 1.0  # the score's cross-entropy over the clip's true objects (queries.py)
    bce_weight: float = 1.0
    bce_pos_weight: float = 1.0
    dice_weight: float = 1.0
    # training recipe: the CLI reads these defaults
    lr: float = 1e-4
    text_lr_mult: float = 0.1
    backbone_lr_mult: float = 0.1

    def __post_init__(self):
        if self.num_frames < 1 or self.input_size < 1 or self.frame_stride < 1:
            raise ValueError(f"num_frames, input_size and frame_stride must be >= 1, got {self.num_frames}, "
                             f"{self.input_size}, {self.frame_stride}")
        if any(s not in range(4) for s in self.lmdf_stages):
            raise ValueError(f"lmdf_stages must be backbone stage indices in 0..3, got {self.lmdf_stages}")
        if self.query_decoder and (self.num_queries < 1 or self.query_layers < 1):
            raise ValueError(f"num_queries and query_layers must be >= 1, got {self.num_queries}, {self.query_layers}")


class TwoStreamRVOS(ReferringModel):
    """`forward(frames, tokens, token_mask, masks=None, valid=None, objects=None) -> dict`.

    frames (B, T, 3, H, W) in [0, 1]; tokens (B, L) long; token_mask (B, L) bool; masks (B, T, H, W) in
    {0, 1}; valid (B, T) bool, the frames that have ground truth (default: all); objects (B, T, H, W) long,
    every annotated object of the clip (1 = the referred one, 2.. the others, 0 = none; `ReferringClips`),
    read by the query decoder only (default: the referred object alone, from masks); selection_tokens and
    selection_token_mask (B, E, L), selection_objects (B, E): more sentences of each clip's video and the
    object number each means (0 = padding), read by the query decoder's selection loss only (`ReferCollate`).
    Returns "logits"
    (B, T, H, W) and, with masks, the weighted "loss_bce" and "loss_dice" over the valid frames (the query
    decoder adds "loss_instance", "loss_score", "loss_select" (the score's choice among the clip's true
    objects), "scores" (B, N) and every query's masks "query_logits" (B, N, T, H/4, W/4)).
    """

    def __init__(self, config: RVOSConfig, backbone: nn.Module, text_encoder: HFTextEncoder,
                 vlmg: nn.ModuleList, necks: nn.ModuleList, decoder: FPNDecoder,
                 queries: QueryDecoder | None = None):
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.text_encoder = text_encoder
        self.vlmg = vlmg
        self.necks = necks
        self.decoder = decoder
        self.queries = queries
        self.text_stages = text_stage_layers(text_encoder.num_layers, len(vlmg), config.text_stage_layers)

    def encode(self, images: torch.Tensor, tokens: torch.Tensor,
               token_mask: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """images (B*T, 3, H, W), T consecutive frames per sentence -> 4 maps (B*T, C_i, H/s_i, W/s_i) and the
        sentence (B, D): the interleaved two-stream encoder."""
        words, layer_mask = self.text_encoder.embed(tokens, token_mask)
        state = {"words": words}

        def fuse(i: int, x: torch.Tensor) -> torch.Tensor:
            start, stop = self.text_stages[i]
            words = self.text_encoder.run_layers(state["words"], layer_mask, start, stop)
            x, state["words"] = self.vlmg[i](x, words, token_mask)
            return x

        features = self.backbone(images, fuse=fuse)
        return features, masked_mean(state["words"], token_mask)  # sentence (B, D)

    def forward(self, frames: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor,
                masks: torch.Tensor | None = None, valid: torch.Tensor | None = None,
                objects: torch.Tensor | None = None, selection_tokens: torch.Tensor | None = None,
                selection_token_mask: torch.Tensor | None = None,
                selection_objects: torch.Tensor | None = None) -> dict[str, Any]:
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"frames {tuple(frames.shape)}: expected (B, T, 3, H, W)")
        b, t, _, h, w = frames.shape
        token_mask = token_mask.bool()
        features, sentence = self.encode(frames.flatten(0, 1), tokens, token_mask)
        motion = rgb_difference(frames) if self.config.lmdf and self.config.lmdf_motion else None
        maps = [neck(f, sentence, t, motion) for neck, f in zip(self.necks, features)]
        if self.queries is not None:
            selection = (selection_tokens, selection_token_mask, selection_objects)
            self._check_selection(*selection, b)
            return self._query_forward(maps, sentence, self.plain_sentence(tokens, token_mask), frames, masks,
                                       valid, objects, selection)
        logits = self.decoder(maps, sentence.repeat_interleave(t, dim=0))  # (B*T, 1, H/4, W/4)
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False).view(b, t, h, w)
        out: dict[str, Any] = {"logits": logits}
        if masks is None:
            return out
        keep = self._check_targets(masks, valid, logits.shape)
        out["loss_bce"], out["loss_dice"] = self._mask_losses(logits, masks, keep)
        return out

    def _mask_losses(self, logits: torch.Tensor, masks: torch.Tensor, keep: torch.Tensor):
        """Weighted BCE and Dice of the single-mask head's (B, T, H, W) logits over the annotated frames."""
        chosen, target = logits[keep], masks[keep].to(logits.dtype)  # (n_valid, H, W)
        if chosen.shape[0] == 0:  # no annotated frame in the batch: zero losses that keep the graph
            zero = logits.sum() * 0
            return zero, zero
        cfg = self.config
        return (cfg.bce_weight * bce_loss([chosen], target, cfg.bce_pos_weight),
                cfg.dice_weight * dice_loss([chosen], target))

    @staticmethod
    def _check_targets(masks: torch.Tensor, valid: torch.Tensor | None, shape: torch.Size) -> torch.Tensor:
        """The (B, T) bool frames to supervise, after checking masks and valid against (B, T, H, W)."""
        if masks.shape != shape:
            raise ValueError(f"masks {tuple(masks.shape)}: expected (B, T, H, W) = {tuple(shape)}")
        keep = torch.ones(shape[:2], dtype=torch.bool, device=masks.device) if valid is None else valid.bool()
        if keep.shape != shape[:2]:
            raise ValueError(f"valid {tuple(keep.shape)}: expected (B, T) = {tuple(shape[:2])}")
        return keep

    @staticmethod
    def _check_selection(tokens, token_mask, numbers, b: int) -> None:
        """The selection_* inputs: all three or none, tokens and mask (B, E, L), numbers (B, E) >= 0."""
        given = [x is not None for x in (tokens, token_mask, numbers)]
        if any(given) and not all(given):
            raise ValueError("selection_tokens, selection_token_mask and selection_objects go together: got "
                             + ", ".join(n for n, g in zip(("tokens", "token_mask", "objects"), given) if g))
        if not any(given):
            return
        if tokens.ndim != 3 or tokens.shape[0] != b or token_mask.shape != tokens.shape:
            raise ValueError(f"selection_tokens {tuple(tokens.shape)} and selection_token_mask "
                             f"{tuple(token_mask.shape)}: expected both (B, E, L) with B = {b}")
        if numbers.shape != tokens.shape[:2] or bool((numbers < 0).any()):
            raise ValueError(f"selection_objects {tuple(numbers.shape)}: expected (B, E) = {tuple(tokens.shape[:2])} "
                             "of object numbers >= 0 (0 = padding)")

    def plain_sentence(self, tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) tokens -> (B, D): the text encoder's masked-mean sentence without the vision guidance, the one
        the query decoder's score reads (so that any sentence of the video can train it on a clip, queries.py)."""
        return masked_mean(self.text_encoder(tokens, token_mask.bool()), token_mask.bool())

    def _query_forward(self, maps, sentence, plain, frames, masks, valid, objects, selection) -> dict[str, Any]:
        """The query decoder's head (queries.py): the best-scoring query's masks; losses after matching."""
        b, t, _, h, w = frames.shape
        base = self.decoder.top_down(maps)  # (B*T, d, H/4, W/4)
        pixels = self.decoder.modulate(base, sentence.repeat_interleave(t, dim=0))
        memory = maps[-2]  # stride 16: T*hm*wm tokens, cheap to attend over the whole clip
        small = pixels.shape[-2:]
        rgb = F.interpolate(frames.flatten(0, 1), size=small, mode="area").view(b, t, 3, *small)
        base = base.unflatten(0, (b, t))
        query_masks, scores = self.queries(pixels.unflatten(0, (b, t)), memory.unflatten(0, (b, t)), sentence,
                                           rgb, base, plain)
        best = scores.argmax(1)
        picked = query_masks[torch.arange(b, device=best.device), best]  # (B, T, h/4, w/4)
        logits = F.interpolate(picked, size=(h, w), mode="bilinear", align_corners=False)
        out: dict[str, Any] = {"logits": logits, "scores": scores, "query_logits": query_masks}
        if masks is None:
            return out
        keep = self._check_targets(masks, valid, logits.shape)
        if objects is None:
            objects = masks.long()
        elif objects.shape != masks.shape:
            raise ValueError(f"objects {tuple(objects.shape)}: expected (B, T, H, W) = {tuple(masks.shape)}")
        losses, owner = query_losses(query_masks, scores, objects, keep, (h, w), self.config.bce_pos_weight,
                                     self.config.match_score_cost)
        cfg = self.config
        out.update(loss_bce=cfg.bce_weight * losses["loss_bce"], loss_dice=cfg.dice_weight * losses["loss_dice"],
                   loss_instance=cfg.instance_weight * losses["loss_instance"],
                   loss_score=cfg.score_weight * losses["loss_score"])
        if self.decoder.head is not None:  # the single-mask referring head, an auxiliary loss
            aux = self.decoder.head(pixels).view(b, t, *small)
            up = F.interpolate(aux, size=(h, w), mode="bilinear", align_corners=False)
            out["loss_aux_bce"], out["loss_aux_dice"] = self._mask_losses(up, masks, keep)
        if cfg.select_weight > 0:
            probs = query_masks.detach().float().sigmoid()
            out["loss_select"] = cfg.select_weight * self._selection(base, rgb, keep, plain, objects, probs, owner,
                                                                     *selection)
        return out

    def _selection(self, base, rgb, keep, plain, objects, probs, owner, tokens, token_mask,
                   numbers) -> torch.Tensor:
        """The score's cross-entropy of choosing the object each sentence means (queries.selection_loss), for the
        clip's own sentence (the referred object, number 1) and for every `selection_*` sentence of the same
        video (tokens (B, E, L), numbers (B, E): the object each means, 0 = padding): once among the clip's
        true objects, once among the queries the matching gave an object (their own masks, probs (B, N, T, h, w);
        owner (B, N) from query_losses), so that the score also learns the masks it ranks at test time."""
        true_masks, present = object_masks(objects, keep, base.shape[-2:], self.config.num_queries)
        clips = torch.arange(base.shape[0], device=base.device)
        sentences, wanted = plain, torch.ones_like(clips)
        if numbers is not None and numbers.numel():
            real = numbers > 0
            if bool(real.any()):
                extra = self.plain_sentence(tokens[real], token_mask[real])
                clips = torch.cat([clips, real.nonzero()[:, 0]])
                sentences, wanted = torch.cat([sentences, extra]), torch.cat([wanted, numbers[real]])
        inside = wanted <= present.shape[1]  # objects past num_queries are not scored
        c = clips[inside]
        true = selection_loss(self.queries.score(true_masks[c], base[c], sentences[inside], rgb[c]), present[c],
                              wanted[inside] - 1)
        hit = owner[clips] == wanted[:, None]  # (P, N): the query matched to the object the sentence means
        has = hit.any(1)
        c = clips[has]
        guessed = selection_loss(self.queries.score(probs[c], base[c], sentences[has], rgb[c]), owner[c] > 0,
                                 hit[has].float().argmax(1))
        return true + guessed

    @classmethod
    def from_config(cls, config: RVOSConfig) -> TwoStreamRVOS:
        """Build every part from the config (loading the pretrained weights it names)."""
        backbone = build_backbone(config.backbone, config.backbone_kwargs, config.pretrained_backbone)
        text = HFTextEncoder.from_dir(config.text_dir, pretrained=config.pretrained_text,
                                      max_tokens=config.max_tokens)
        channels, d, dim = tuple(backbone.out_channels), text.dim, config.decoder_dim
        vlmg = nn.ModuleList(VLMG(c, d, config.vlmg_heads, config.vlmg_gate_zero_init) for c in channels)
        necks = nn.ModuleList(
            LMDF(c, d, dim, config.lmdf_kernel, config.lmdf_dilations, config.lmdf_groups, config.lmdf_motion)
            if config.lmdf and i in config.lmdf_stages else Lateral(c, dim)
            for i, c in enumerate(channels))
        decoder = FPNDecoder(dim, d, len(channels), head=not config.query_decoder or config.query_aux_head)
        queries = QueryDecoder(dim, d, config.num_queries, config.query_layers) if config.query_decoder else None
        return cls(config, backbone, text, vlmg, necks, decoder, queries)


def _twostream(name: str, overrides: dict[str, Any], **variant: Any) -> TwoStreamRVOS:
    """The one private builder: paper defaults < the variant's numbers < the caller's overrides."""
    config = variant_config(RVOSConfig, name, overrides, variant, "two-stream")
    require_text_dir(config, name, variant)
    return TwoStreamRVOS.from_config(config)


def twostream_r101(**overrides: Any) -> TwoStreamRVOS:
    """Paper scale: ResNet-101 (pretrained_backbone=<torchvision .pth>) + BERT-base from `text_dir`, 320x320,
    clips of 5 frames."""
    return _twostream("twostream_r101", overrides)


def twostream_lite(**overrides: Any) -> TwoStreamRVOS:
    """EfficientNet-Lite0 + all-MiniLM-L6-v2 (offline assets, real weights), 128x128, clips of 3 frames 2 apart,
    a 64-d LMDF (from stride 8 on) and decoder, the per-object query decoder: sized to train on a 2-core CPU."""
    return _twostream(
        "twostream_lite", overrides, backbone="efficientnet_lite0", backbone_kwargs={"drop_path_rate": 0.1},
        pretrained_backbone=True, text_dir=None, input_size=128, num_frames=3, frame_stride=2, lmdf_stages=[1, 2, 3],
        lmdf_groups=4, decoder_dim=64, query_decoder=True,
        lr=6e-4, backbone_lr_mult=0.25, text_lr_mult=0.05,
    )


RVOS_BUILDERS: dict[str, Callable[..., TwoStreamRVOS]] = {
    "twostream_r101": twostream_r101,
    "twostream_lite": twostream_lite,
}
