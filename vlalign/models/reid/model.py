"""CLIP4VI-ReID (arXiv 2511.10309): visible-infrared re-identification with text as the bridge, in three stages.

    stage 1 TSG  visible image features (frozen towers) <-> per-identity prompts: learn the prompts
    stage 2 IFE  shared image encoder on both modalities, against the frozen text semantics of every identity
    stage 3 HSA  prompts + high-level image layers refined together on both modalities
    test         image encoder only: cat(feat, proj), L2-normalised, cosine distance

Where each choice comes from (paper = the abstract; CLIP-ReID = Syliz517/CLIP-ReID, the base the paper builds
on; ours = this project, where both are silent):
- paper: TSG generates text semantics from *visible* images only; IFE rectifies infrared embeddings with them
  and trains the *shared* image encoder; HSA refines the alignment so that the text keeps identity only;
  three stages; learnable prompts; test with the image encoder only.
- CLIP-ReID: the prompt "A photo of a X X X X person." with 4 learnable tokens per identity (prompts.py);
  stage-1 losses i2t + t2i supervised contrastive with both towers frozen, on image features extracted once
  without augmentation (the task does that, `reid.py`); stage-2 text features of every identity computed once
  and frozen; losses ID (label-smoothed CE, eps 0.1, on the two BNNeck heads, bias-free classifiers, BN bias
  frozen) + batch-hard triplet (margin 0.3, on `feat` and `proj`) + i2t label-smoothed CE against the text
  table; ViT weights ID 0.25, triplet 1, i2t 1; test feature cat(feat, proj) before the BNNecks.
- ours:
  * IFE: on top of CLIP-ReID's stage 2 over both modalities, an infrared alignment term
    `ife_weight * mean(1 - cos(proj_ir, text[pid]))` pulls infrared embeddings onto their identity's
    (visible-born) text; the optional training-only rectification head of systems.md is not built.
  * HSA: the prompts (and the lite text projection) and the last `hsa_layers` image blocks + projection +
    heads train; losses ID + triplet + `hsa_weight` x (i2t + t2i supervised contrastive between both
    modalities' `proj` and the live text of the batch's identities) + i2t CE against the stage-start text
    table whose batch rows are replaced by their live features (so the CE reaches the prompts without
    re-encoding every identity each step).
  * alignment logits: `align_scale * cos` when `align_normalize` (lite: the new projections have no natural
    scale), else CLIP-ReID's raw dot products (`align_scale` 1; vitb16).
  * the CLIP-ReID block-11 triplet term is left out; frozen BatchNorms and frozen towers stay in eval mode
    (running statistics and dropout of what does not train do not move).
  * lite: EfficientNet-Lite0 + MiniLM (offline assets), learned projections to a 256-d joint space,
    K = 4 (2 visible + 2 infrared) x P = 8 per batch; 192x96 input (the synthetic 128x64 crops upsampled:
    stripes and hair cover few pixels at 128x64) and AdamW at 3e-3 for the shared encoder (heads 10x). Both
    measured on the synthetic SYSU set (benchmarks/README.md): the encoder lr was the big lever, 3.5e-4 ->
    3e-3 took an image-only 600-iteration run from Rank-1 27 to 67.
  * lite HSA trains all 16 image blocks (`hsa_layers=16`; the stem stays frozen): with 5, the same stage-2
    model ended 2.2 Rank-1 points lower (seed 0, benchmarks/README.md). vitb16 keeps the default, its last 2 blocks.
    Lite HSA runs 300 iterations: 200 -> 300 on the same stage-2 models lifted Rank-1 at all three training
    seeds (mean 79.2 -> 81.1) for about 1.5 more minutes.
  * lite IFE: 2,000 iterations, ending on a weight average (`stage_ema` 0.999, about the last 1,000
    iterations, bias-corrected: vlalign.engine.WeightEMA); HSA starts from it and ends on its live weights.
    In one run (benchmarks/README.md) the stage-2 average beat the live stage-2 weights by 2.1 Rank-1 points
    (0.998: 1.5, 0.995: 0.4), while averaging HSA's 300 iterations moved nothing (-0.2 to -0.1).
  * lite test feature: the image's and its mirror image's features summed (`test_flip`); on three trained
    models it added 0.7 to 1.5 Rank-1 points (benchmarks/README.md). Off for vitb16, which tests one view
    like CLIP-ReID.
  * lite test feature centred (`test_center`): training ends by fitting `feature_center`, the average of the
    visible and the infrared training images' mean test features (400 images each, `vlalign.reid.
    fit_feature_center`); at test it is subtracted and the feature re-normalised. Scored again on eight
    trained models it moved Rank-1 by -0.3 to +1.6, +0.5 on average (benchmarks/README.md). Off for vitb16.
  * `frozen_blocks` (off): the image tower's stem and first n blocks never train. n = 5 makes a lite IFE
    step 1.6x faster (0.49 against 0.79 s), but a run that spent the time on 2,400 / 400 IFE / HSA
    iterations ended 2.9 Rank-1 points below the recipe's run at the same seed.
  * options, off by default: `remap_prob` turns either modality's image into its grey level through a random
    curve (vlalign.data.reid_train.remap_grey), so that absolute grey levels cannot carry an identity.
    `gray_input` reduces every image to its luma before the image encoder, in training and at test (infrared
    and CAJ's one-channel images are unchanged by it): colour cannot reach the features, so the model cannot
    pair a training identity's colours with its infrared intensities, and the test gallery looks like the grey
    training images. `parts` (lite) adds PCB's horizontal stripes, each with its own BNNeck and ID classifier
    (`loss_part_id`, `id_weight` x their mean); the test feature then averages the cosine similarities of the
    global feature and of every stripe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlalign.data.reid_train import luma
from vlalign.models.builder import variant_config
from vlalign.models.reid.losses import smooth_ce, supcon_loss, triplet_hard_loss
from vlalign.models.reid.prompts import PromptLearner

__all__ = ["CLIP4VIReID", "CLIP4VIReIDConfig", "STAGES"]

STAGES = {1: "tsg", 2: "ife", 3: "hsa"}


@dataclass
class CLIP4VIReIDConfig:
    """Everything needed to rebuild a CLIP4VI-ReID model, plus its training recipe (read by `vlalign.reid`)."""

    name: str = "clip4vireid_vitb16"
    num_ids: int = 395  # SYSU-MM01 train + val identities
    image_tower: str = "clip"  # "clip" (ViT of a CLIP checkpoint) or "efficientnet_lite0"
    clip_path: str | None = None  # OpenAI / open_clip / HF CLIP checkpoint (vitb16)
    clip_config: dict[str, Any] | None = None  # the CLIP architecture, filled at build: rebuilds without weights
    pretrained_backbone: bool | str = True  # lite: True = the offline Lite0 asset; clip: load clip_path
    text_dir: str | None = None  # lite: transformers folder (None = the MiniLM asset)
    pretrained_text: bool = True
    drop_path_rate: float = 0.1
    last_stride: int = 2  # lite: stride of the Lite0 stride-32 stage (1 = keep stride 16); the ViT ignores it
    image_size: tuple[int, int] = (288, 144)  # (H, W)
    embed_dim: int = 256  # lite joint space (CLIP brings its own)
    prompt_prefix: str = "A photo of a"
    prompt_suffix: str = "person."
    n_ctx: int = 4
    # losses
    id_weight: float = 0.25
    triplet_weight: float = 1.0
    i2t_weight: float = 1.0
    ife_weight: float = 1.0
    hsa_weight: float = 1.0
    label_smoothing: float = 0.1
    triplet_margin: float = 0.3
    align_normalize: bool = False
    align_scale: float = 1.0
    hsa_layers: int = 2
    frozen_blocks: int = 0  # the image tower's stem and first n blocks never train (ours, see above)
    # recipe, per stage (TSG, IFE, HSA)
    stage_iters: tuple[int, int, int] = (1000, 3000, 1000)
    stage_lr: tuple[float, float, float] = (3.5e-4, 5e-6, 5e-6)
    stage_batch_size: tuple[int, int, int] = (64, 64, 64)
    stage_ema: tuple[float, float, float] = (0.0, 0.0, 0.0)  # weight-average decay per stage, 0 = off (ours)
    num_instances: int = 8  # K images per identity in a PK batch, half visible, half infrared
    weight_decay: float = 1e-4
    head_lr_mult: float = 1.0  # BNNeck heads' lr / the stage's lr (stages 2 and 3)
    warmup_iters: int = 10
    # CAJ's channel augmentation: a visible training image becomes one of R, G, B or its luma, repeated
    channel_prob: float = 0.5
    # either modality's image becomes its grey level through a random curve (`remap_grey`; ours)
    remap_prob: float = 0.0
    remap_knots: int = 5  # points of that random curve, the two ends included
    gray_input: bool = False  # every image reduced to its luma before the image encoder (ours, see above)
    parts: int = 0  # PCB horizontal stripes with their own ID heads (lite tower only; ours, see above)
    test_flip: bool = False  # test feature from the image and its mirror image (ours, see above)
    test_center: bool = False  # test feature centred on the training images' mean (ours, see above)

    def __post_init__(self):
        for name in ("image_size", "stage_iters", "stage_lr", "stage_batch_size", "stage_ema"):
            setattr(self, name, tuple(getattr(self, name)))  # JSON gives lists
        if self.image_tower not in ("clip", "efficientnet_lite0"):
            raise ValueError(f"image_tower must be 'clip' or 'efficientnet_lite0', got {self.image_tower!r}")
        for name in ("stage_iters", "stage_lr", "stage_batch_size", "stage_ema"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"{name} needs 3 values (TSG, IFE, HSA), got {getattr(self, name)}")
        if not all(0.0 <= d < 1.0 for d in self.stage_ema):
            raise ValueError(f"stage_ema values must be in [0, 1) (0 = no weight average), got {self.stage_ema}")
        if self.last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {self.last_stride}")
        for name in ("channel_prob", "remap_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.remap_knots < 2:
            raise ValueError(f"remap_knots must be >= 2 (a curve needs its two ends), got {self.remap_knots}")
        if self.parts < 0 or (self.parts and self.image_tower != "efficientnet_lite0"):
            raise ValueError(f"parts must be >= 0 and needs image_tower='efficientnet_lite0', got {self.parts} "
                             f"with {self.image_tower!r}")
        if self.num_instances < 2 or self.num_instances % 2:
            raise ValueError(f"num_instances must be even (half visible, half infrared), got {self.num_instances}")


class CLIP4VIReID(nn.Module):
    """`forward(image=None, pid=None, modality=None, image_feature=None) -> dict`.

    image (B, 3, H, W) in [0, 1]; pid (B,) long identity labels 0..num_ids-1; modality (B,) long, 0 visible,
    1 infrared; image_feature (B, D) precomputed `proj` features (stage 1 only, instead of images).
    Without `pid`: {"features": (B, C + D) L2-normalised test features}. With it: the current stage's
    weighted `loss_*` entries (select the stage with `set_stage`).
    """

    # strict loading (vlalign.models.loading): state-dict keys a checkpoint may lack, and why
    LOAD_TOLERATED = {"feature_center": "saved before test centring existed: the zero centre changes nothing"}

    def __init__(self, config: CLIP4VIReIDConfig, image_encoder: nn.Module, text_encoder: nn.Module):
        super().__init__()
        self.config = config
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        with torch.no_grad():
            ids, start = text_encoder.template(config.prompt_prefix, config.n_ctx, config.prompt_suffix)
            template = text_encoder.embed_ids(ids)
        self.prompt = PromptLearner(template, start, config.n_ctx, config.num_ids)
        c, d = image_encoder.feat_dim, image_encoder.proj_dim
        if text_encoder.dim != d:
            raise ValueError(f"text features are {text_encoder.dim}-d but image projections {d}-d")
        if not 0 <= config.frozen_blocks < image_encoder.num_blocks:
            raise ValueError(f"frozen_blocks must be in 0..{image_encoder.num_blocks - 1} (the image tower has "
                             f"{image_encoder.num_blocks} blocks), got {config.frozen_blocks}")
        self.bottleneck, self.classifier = _bnneck(c, config.num_ids)
        self.bottleneck_proj, self.classifier_proj = _bnneck(d, config.num_ids)
        heads = [_bnneck(c, config.num_ids) for _ in range(config.parts)]
        self.part_bottlenecks = nn.ModuleList(bn for bn, _ in heads)
        self.part_classifiers = nn.ModuleList(cls for _, cls in heads)
        # (num_ids, D) text semantics of every identity, from `refresh_text_table` (stages 2 and 3)
        self.register_buffer("text_table", torch.zeros(config.num_ids, d), persistent=False)
        # (C + D,) mean test feature of the training images, from `vlalign.reid.fit_feature_center`; saved
        self.register_buffer("feature_center", torch.zeros(c + d))
        self.stage = 0
        self.set_stage(1)

    # ---- stages ---------------------------------------------------------------------------------------------
    def head_parameters(self) -> list[nn.Parameter]:
        """The BNNeck heads (BNs and classifiers), trained from scratch in stages 2 and 3."""
        return [*self.bottleneck.parameters(), *self.classifier.parameters(), *self.bottleneck_proj.parameters(),
                *self.classifier_proj.parameters(), *self.part_bottlenecks.parameters(),
                *self.part_classifiers.parameters()]

    def stage_parameters(self, stage: int) -> list[nn.Parameter]:
        """What `stage` trains (everything else is frozen)."""
        heads = self.head_parameters()
        text = [self.prompt.ctx, *self.text_encoder.head_parameters()]
        if stage == 1:
            params = text
        elif stage == 2:
            params = [*self.image_encoder.parameters(), *heads]
        elif stage == 3:
            params = [*text, *self.image_encoder.high_level_parameters(self.config.hsa_layers), *heads]
        else:
            raise ValueError(f"stage must be 1 (TSG), 2 (IFE) or 3 (HSA), got {stage}")
        # BNNeck: BN bias never trains; nor does the image tower below `frozen_blocks`
        frozen = {id(bn.bias) for bn in (self.bottleneck, self.bottleneck_proj, *self.part_bottlenecks)}
        frozen |= {id(p) for p in self.low_level_parameters()}
        return [p for p in params if id(p) not in frozen]

    def low_level_parameters(self) -> list[nn.Parameter]:
        """The image tower's parameters before its last `num_blocks - frozen_blocks` blocks (stem included)."""
        n = self.config.frozen_blocks
        if not n:
            return []
        encoder = self.image_encoder
        high = {id(p) for p in encoder.high_level_parameters(encoder.num_blocks - n)}
        return [p for p in encoder.parameters() if id(p) not in high]

    def set_stage(self, stage: int) -> None:
        """Freeze all but the stage's parameters; stages 2 and 3 first compute the identities' text table."""
        trainable = {id(p) for p in self.stage_parameters(stage)}
        for p in self.parameters():
            p.requires_grad_(id(p) in trainable)
        self.stage = stage
        if stage in (2, 3):
            self.refresh_text_table()
        self.train(self.training)  # re-apply the eval mode of what is frozen

    def train(self, mode: bool = True) -> CLIP4VIReID:
        super().train(mode)
        if mode:  # a module whose parameters are all frozen keeps its running statistics and drops no units
            for m in self.modules():
                params = list(m.parameters())
                if params and not any(p.requires_grad for p in params):
                    m.eval()
        return self

    @torch.no_grad()
    def refresh_text_table(self, chunk: int = 64) -> Tensor:
        """Text features of every identity (num_ids, D), computed with the frozen towers in eval mode."""
        was = self.text_encoder.training
        self.text_encoder.eval()
        ids = torch.arange(self.config.num_ids, device=self.prompt.ctx.device)
        table = torch.cat([self.text_features(ids[i:i + chunk]) for i in range(0, len(ids), chunk)])
        self.text_encoder.train(was)
        self.text_table = table.to(self.text_table.dtype)
        return table

    # ---- features -------------------------------------------------------------------------------------------
    def text_features(self, pids: Tensor) -> Tensor:
        """pids (N,) -> (N, D) text features of those identities' prompts."""
        return self.text_encoder(self.prompt(pids))

    def encode(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """image (B, 3, H, W) in [0, 1] -> feat (B, C), proj (B, D), stripes (B, parts, C) or None."""
        if self.config.gray_input:
            image = luma(image).unsqueeze(1).expand_as(image)
        if self.config.parts:
            return self.image_encoder.parts(image, self.config.parts)
        return (*self.image_encoder(image), None)

    def extract(self, image: Tensor) -> Tensor:
        """image (B, 3, H, W) in [0, 1] -> (B, C + D [+ parts x C]) L2-normalised test features (cosine
        distance); with parts, the global feature and each stripe are normalised alone and weigh the same.
        With `test_flip` every piece is the sum of the image's and its mirror image's (stripes are rows, so they
        stay aligned); with `test_center` the global piece is re-normalised after subtracting `feature_center`."""
        feat, proj, stripes = self.encode(image)
        if self.config.test_flip:
            mirror = self.encode(image.flip(-1))
            feat, proj = feat + mirror[0], proj + mirror[1]
            stripes = None if stripes is None else stripes + mirror[2]
        out = F.normalize(torch.cat([feat, proj], dim=1), dim=1)
        if self.config.test_center:  # a zero centre (not fitted yet) leaves the feature as it is
            out = F.normalize(out - self.feature_center, dim=1)
        if stripes is None:
            return out
        pieces = [out, *F.normalize(stripes, dim=2).unbind(1)]
        return torch.cat(pieces, dim=1) / len(pieces) ** 0.5

    def _logits(self, image: Tensor, text: Tensor) -> Tensor:
        if self.config.align_normalize:
            image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
        return self.config.align_scale * image @ text.t()

    # ---- forward --------------------------------------------------------------------------------------------
    def forward(self, image: Tensor | None = None, pid: Tensor | None = None, modality: Tensor | None = None,
                image_feature: Tensor | None = None) -> dict[str, Tensor]:
        if pid is None:
            if image is None:
                raise ValueError("forward needs an image (test features) or pid with images/features (training)")
            return {"features": self.extract(image)}
        if int(pid.min()) < 0 or int(pid.max()) >= self.config.num_ids:
            raise ValueError(f"pid labels must be in 0..{self.config.num_ids - 1}, got {pid.min()}..{pid.max()}")
        if self.stage == 1:
            return self._tsg(image, image_feature, pid)
        if image is None or modality is None:
            raise ValueError(f"stage {self.stage} ({STAGES[self.stage]}) needs image and modality")
        return self._shared(image, pid, modality)

    def _contrast(self, image: Tensor, text: Tensor, pid: Tensor) -> tuple[Tensor, Tensor]:
        """(i2t, t2i) supervised contrastive losses between (B, D) image and (B, D) text features."""
        if self.config.align_normalize:
            image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
        s = self.config.align_scale
        return supcon_loss(image, text, pid, pid, s), supcon_loss(text, image, pid, pid, s)

    def _batch_text(self, pid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Live text of the batch's identities: (unique ids, their features (U, D), per-sample (B, D))."""
        unique, inverse = torch.unique(pid, return_inverse=True)
        text = self.text_features(unique)
        return unique, text, text[inverse]

    def _tsg(self, image: Tensor | None, image_feature: Tensor | None, pid: Tensor) -> dict[str, Tensor]:
        if image_feature is None:
            if image is None:
                raise ValueError("stage 1 (TSG) needs image_feature or image")
            with torch.no_grad():  # frozen image tower
                image_feature = self.encode(image)[1]
        _, _, text = self._batch_text(pid)
        i2t, t2i = self._contrast(image_feature.float(), text, pid)
        return {"loss_i2t_con": i2t, "loss_t2i_con": t2i}

    def _shared(self, image: Tensor, pid: Tensor, modality: Tensor) -> dict[str, Tensor]:
        cfg = self.config
        feat, proj, stripes = self.encode(image)
        logits = (self.classifier(self.bottleneck(feat)), self.classifier_proj(self.bottleneck_proj(proj)))
        out = {"loss_id": cfg.id_weight * sum(smooth_ce(lg, pid, cfg.label_smoothing) for lg in logits),
               "loss_triplet": cfg.triplet_weight * (triplet_hard_loss(feat, pid, cfg.triplet_margin)
                                                     + triplet_hard_loss(proj, pid, cfg.triplet_margin))}
        if stripes is not None:
            part_ce = [smooth_ce(cls(bn(stripes[:, i])), pid, cfg.label_smoothing)
                       for i, (bn, cls) in enumerate(zip(self.part_bottlenecks, self.part_classifiers))]
            out["loss_part_id"] = cfg.id_weight * sum(part_ce) / len(part_ce)
        table = self.text_table
        if self.stage == 2:
            ir = modality == 1
            cos = F.cosine_similarity(proj[ir], table[pid[ir]], dim=-1)
            # always present (0 without infrared) so that every step logs the same losses
            out["loss_ife"] = cfg.ife_weight * ((1 - cos).mean() if ir.any() else proj.sum() * 0)
        else:
            unique, text_u, text = self._batch_text(pid)
            out["loss_hsa"] = cfg.hsa_weight * sum(self._contrast(proj, text, pid))
            table = table.index_put((unique,), text_u)  # out of place: gradients reach the batch's prompts
        out["loss_i2t"] = cfg.i2t_weight * smooth_ce(self._logits(proj, table), pid, cfg.label_smoothing)
        return out


def _bnneck(dim: int, num_ids: int) -> tuple[nn.BatchNorm1d, nn.Linear]:
    """BNNeck (Luo et al.): BN with a frozen zero bias, then a bias-free classifier (normal std 0.001)."""
    bn = nn.BatchNorm1d(dim)
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    classifier = nn.Linear(dim, num_ids, bias=False)
    nn.init.normal_(classifier.weight, std=0.001)
    return bn, classifier


# ---- builders -------------------------------------------------------------------------------------------------
def _build_towers(config: CLIP4VIReIDConfig) -> tuple[nn.Module, nn.Module]:
    from vlalign.models.reid.image import ClipImageTower, LiteImageTower
    from vlalign.models.reid.prompts import ClipPromptTower, HFPromptTower

    if config.image_tower == "efficientnet_lite0":
        from vlalign.models.backbones import efficientnet_lite0_for_model
        from vlalign.models.text import HFTextEncoder

        backbone = efficientnet_lite0_for_model(config.pretrained_backbone, drop_path_rate=config.drop_path_rate)
        if config.last_stride == 1:
            backbone.keep_last_stride()
        text = HFTextEncoder.from_dir(config.text_dir, pretrained=config.pretrained_text)
        return LiteImageTower(backbone, config.embed_dim), HFPromptTower(text, config.embed_dim)

    from vlalign.models.clip.model import CLIP, CLIP_MEAN, CLIP_STD, ClipConfig
    from vlalign.models.clip.tokenizer import ClipTokenizer

    if config.pretrained_backbone and config.clip_path:
        from vlalign.models.clip.convert import load_clip

        clip = load_clip(config.clip_path, image_size=tuple(config.image_size))
        config.clip_config = dataclasses.asdict(clip.config)
    elif config.clip_config is not None:  # a model folder being rebuilt (weights follow), or a random test CLIP
        clip = CLIP(ClipConfig(**{**config.clip_config, "image_size": tuple(config.image_size)}))
        config.clip_config = dataclasses.asdict(clip.config)
    else:
        raise ValueError(f"{config.name} needs clip_path=<local CLIP checkpoint, e.g. ViT-B-16.pt> (no CLIP weights "
                         "can be downloaded here)")
    visual = clip.visual
    clip.visual = None  # the image tower lives in the image encoder, once
    return ClipImageTower(visual, CLIP_MEAN, CLIP_STD), ClipPromptTower(clip, ClipTokenizer(),
                                                                         clip.config.context_length)


def _clip4vireid(name: str, overrides: dict[str, Any], **variant: Any) -> CLIP4VIReID:
    """The one private builder: defaults < the variant's numbers < the caller's overrides."""
    config = variant_config(CLIP4VIReIDConfig, name, overrides, variant, "CLIP4VI-ReID")
    image_encoder, text_encoder = _build_towers(config)
    return CLIP4VIReID(config, image_encoder, text_encoder)


def clip4vireid_vitb16(**overrides: Any) -> CLIP4VIReID:
    """Paper scale: CLIP ViT-B/16 from `clip_path` (positional embeddings resized to 288x144), CLIP-ReID's ViT
    recipe (Adam 3.5e-4 for the prompts, 5e-6 for the encoder, ID weight 0.25, batch 64 = 8 ids x 8)."""
    return _clip4vireid("clip4vireid_vitb16", overrides)


def clip4vireid_lite(**overrides: Any) -> CLIP4VIReID:
    """EfficientNet-Lite0 + all-MiniLM-L6-v2 (offline assets, real weights), 192x96, a 256-d joint space with
    learned projections; sized for CPU training (recipe: ours, see benchmarks/learning_reid.py): TSG / IFE /
    HSA = 150 / 1,800 / 300 iterations at lr 1e-3 / 3e-3 / 1e-3, HSA over every image block; the test feature
    sums the mirror image's and is centred on the training images' mean."""
    return _clip4vireid("clip4vireid_lite", overrides, **LITE_VARIANT)


# the lite builder's numbers over the config defaults; a module constant so that benchmarks read the recipe
# (e.g. stage_iters) without building a model
LITE_VARIANT: dict[str, Any] = dict(
    image_tower="efficientnet_lite0", image_size=(192, 96), embed_dim=256, id_weight=1.0, align_normalize=True,
    align_scale=20.0, hsa_layers=16, stage_iters=(150, 2000, 300), stage_lr=(1e-3, 3e-3, 1e-3),
    stage_ema=(0.0, 0.999, 0.0), stage_batch_size=(64, 32, 32), num_instances=4, warmup_iters=50, last_stride=1,
    head_lr_mult=10.0, test_flip=True, test_center=True,
)


REID_BUILDERS: dict[str, Callable[..., CLIP4VIReID]] = {
    "clip4vireid_vitb16": clip4vireid_vitb16,
    "clip4vireid_lite": clip4vireid_lite,
}
