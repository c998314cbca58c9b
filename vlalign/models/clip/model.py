"""CLIP (Radford et al., ICML 2021): the transformer blocks, the ViT image tower, the text tower and the model.

Module and parameter names equal the keys of OpenAI's released state dicts (`visual.conv1.weight`,
`visual.transformer.resblocks.N.attn.in_proj_weight`, `token_embedding.weight`, `text_projection`, ...), so
their checkpoints load strictly without remapping (see convert.py for the readers and the HF conversion).

Differences from OpenAI's code that leave the numbers unchanged:
- Tokens are batch-first, `(B, N, C)`; OpenAI's code is sequence-first, which the parameters do not see.
- Attention uses `F.scaled_dot_product_attention`; the text tower's causal mask is its `is_causal`.
- Everything is fp32: OpenAI's fp16 weights are upcast when copied in.

Inputs are *normalised* images: this module does no pixel normalisation. OpenAI's statistics are `CLIP_MEAN`
and `CLIP_STD`; CLIP-ReID fine-tunes with mean = std = 0.5.

The ModifiedResNet image tower is in resnet.py. Order of this file: blocks, ViT, config, model, tiny config.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CLIP", "ClipConfig", "VisionTransformer", "Transformer", "ResidualAttentionBlock", "QuickGELU",
           "tiny_clip_config", "CLIP_MEAN", "CLIP_STD"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP was trained with."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


_ACTIVATIONS = {"quick_gelu": QuickGELU, "gelu": nn.GELU}


class Attention(nn.Module):
    """Multi-head self-attention with `nn.MultiheadAttention`'s parameter names (`in_proj_weight` holds
    q, k, v stacked: (3W, W)), batch-first."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if heads < 1 or width % heads:
            raise ValueError(f"attention width {width} must split into heads, got heads={heads} (from a state dict, "
                             f"heads = width / head_width: pass the head_width the model was trained with)")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        """(B, N, W) -> (B, N, W); causal: token i attends to tokens <= i only."""
        B, N, W = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(B, N, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, h, N, W/h)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(y.transpose(1, 2).reshape(B, N, W))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, mlp_width: int, activation: str = "quick_gelu"):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, mlp_width)),
            ("gelu", _ACTIVATIONS[activation]()),
            ("c_proj", nn.Linear(mlp_width, width)),
        ]))

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        x = x + self.attn(self.ln_1(x), causal=causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of `ResidualAttentionBlock`s under the key `resblocks.N`."""

    def __init__(self, width: int, layers: int, heads: int, mlp_width: int, activation: str = "quick_gelu"):
        super().__init__()
        self.width = width
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_width, activation)
                                       for _ in range(layers))

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        for block in self.resblocks:
            x = block(x, causal=causal)
        return x


def patch_grid(image_size: tuple[int, int], patch_size: int, stride: int) -> tuple[int, int]:
    """(rows, cols) of patches a `patch_size` convolution with `stride` gives on an (H, W) image."""
    return tuple((s - patch_size) // stride + 1 for s in image_size)  # type: ignore[return-value]


class VisionTransformer(nn.Module):
    """ViT image tower: patches -> [class] + patch tokens + positions -> ln_pre -> transformer -> ln_post.

    stride: patch stride; smaller than `patch_size` gives overlapping patches (TransReID / CLIP-ReID option).
    The positional embeddings cover exactly the patch grid of `image_size`; other input sizes are refused
    (resize the embeddings when loading instead, see convert.py).
    """

    def __init__(self, image_size: tuple[int, int], patch_size: int, width: int, layers: int, heads: int,
                 output_dim: int, mlp_width: int | None = None, stride: int | None = None,
                 activation: str = "quick_gelu"):
        super().__init__()
        self.image_size = tuple(image_size)
        self.grid = patch_grid(self.image_size, patch_size, stride or patch_size)
        self.conv1 = nn.Conv2d(3, width, patch_size, stride=stride or patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(1 + self.grid[0] * self.grid[1], width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, mlp_width or 4 * width, activation)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, image: Tensor, return_all: bool = False) -> Tensor | dict[str, Tensor]:
        """image (B, 3, H, W) normalised, (H, W) = `image_size`.

        Returns (B, D) projected class token; with `return_all`, a dict:
        - "pre": (B, W) class token after ln_post, before the projection (CLIP-ReID's `img_feature`);
        - "proj": (B, D) the same, projected (`encode_image`'s output);
        - "tokens": (B, 1 + N, W) every token after ln_post, class token first, then the N = rows x cols
          patches in row-major order;
        - "penultimate": (B, W) class token output of the second-to-last block, before any norm (CLIP-ReID's
          block-11 triplet feature for ViT-B).
        """
        if tuple(image.shape[-2:]) != self.image_size:
            raise ValueError(f"image of size {tuple(image.shape[-2:])} given to a ViT built for {self.image_size}: "
                             f"build or load the model with image_size={tuple(image.shape[-2:])} (its positional "
                             f"embeddings are resized then)")
        x = self.conv1(image).flatten(2).transpose(1, 2)  # (B, N, W)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        blocks = self.transformer.resblocks
        for block in blocks[:-1]:
            x = block(x)
        penultimate = x[:, 0]
        x = self.ln_post(blocks[-1](x))
        proj = x[:, 0] @ self.proj
        if not return_all:
            return proj
        return {"pre": x[:, 0], "proj": proj, "tokens": x, "penultimate": penultimate}


@dataclass
class ClipConfig:
    """Every number that defines a CLIP architecture (stored in checkpoints and model folders).

    vision_layers: an int is the depth of a ViT image tower; a 4-tuple the blocks per stage of a ModifiedResNet.
    vision_width: ViT width, or the ResNet's stem width (64 for RN50; the pooled feature is 32x that).
    image_size: (H, W) the image tower is built for; the positional embeddings cover its grid.
    stride_size: ViT patch stride (None = patch_size, no overlap).
    resnet_last_stride: 2 as OpenAI; 1 keeps layer4 at stride 16 (CLIP-ReID's RN50).
    vision_mlp / text_mlp: hidden width of the MLPs (None = 4 x width, OpenAI's ratio).
    activation: "quick_gelu" (OpenAI, open_clip "-quickgelu" models) or "gelu" (most open_clip LAION models).
    """

    embed_dim: int = 512
    image_size: tuple[int, int] = (224, 224)
    vision_layers: int | tuple[int, int, int, int] = 12
    vision_width: int = 768
    vision_heads: int = 12
    vision_mlp: int | None = None
    patch_size: int = 16
    stride_size: int | None = None
    resnet_last_stride: int = 2
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int = 512
    text_heads: int = 8
    text_layers: int = 12
    text_mlp: int | None = None
    activation: str = "quick_gelu"
    name: str = "clip"

    def __post_init__(self):
        # JSON round trips turn tuples into lists.
        self.image_size = (self.image_size, self.image_size) if isinstance(self.image_size, int) \
            else tuple(self.image_size)  # type: ignore[assignment]
        if isinstance(self.vision_layers, list | tuple):
            self.vision_layers = tuple(self.vision_layers)  # type: ignore[assignment]
            if len(self.vision_layers) != 4:
                raise ValueError(f"ClipConfig.vision_layers: expected an int (ViT) or 4 ints (ResNet), "
                                 f"got {self.vision_layers}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"ClipConfig.activation: expected one of {sorted(_ACTIVATIONS)}, got {self.activation!r}")

    @property
    def is_resnet(self) -> bool:
        return isinstance(self.vision_layers, tuple)


class CLIP(nn.Module):
    """Image tower `visual` + text tower (top-level keys, as OpenAI's), joined by `logit_scale`.

    encode_image(image (B, 3, H, W)) -> (B, D); visual(image, return_all=True) -> dict (see the towers).
    encode_text(tokens (B, L) long) -> (B, D), pooled at each row's largest id (the EOT token, OpenAI's rule).
    encode_text_embeddings(embeddings (B, L, W), eot_index (B,)) -> (B, D), for learnable prompts.
    forward(image, tokens) -> (logits_per_image (B, T), logits_per_text (T, B)).
    """

    def __init__(self, config: ClipConfig):
        super().__init__()
        self.config = c = config
        if c.is_resnet:
            from vlalign.models.clip.resnet import ModifiedResNet

            self.visual: nn.Module = ModifiedResNet(c.vision_layers, c.embed_dim, c.vision_heads, c.image_size,
                                                    c.vision_width, last_stride=c.resnet_last_stride)
        else:
            self.visual = VisionTransformer(c.image_size, c.patch_size, c.vision_width, c.vision_layers,
                                            c.vision_heads, c.embed_dim, c.vision_mlp, c.stride_size, c.activation)
        self.token_embedding = nn.Embedding(c.vocab_size, c.text_width)
        self.positional_embedding = nn.Parameter(torch.empty(c.context_length, c.text_width))
        self.transformer = Transformer(c.text_width, c.text_layers, c.text_heads, c.text_mlp or 4 * c.text_width,
                                       c.activation)
        self.ln_final = nn.LayerNorm(c.text_width)
        self.text_projection = nn.Parameter(torch.empty(c.text_width, c.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self._init_weights()

    def _init_weights(self) -> None:
        """OpenAI's initialisation of the text tower and of every transformer (only matters without weights)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        transformers = [self.transformer] + ([self.visual.transformer] if hasattr(self.visual, "transformer")
                                             else [])
        for t in transformers:
            attn_std = t.width ** -0.5
            proj_std = attn_std * (2 * len(t.resblocks)) ** -0.5
            for block in t.resblocks:
                nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
                nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
                nn.init.zeros_(block.attn.out_proj.bias)
                nn.init.normal_(block.mlp.c_fc.weight, std=(2 * t.width) ** -0.5)
                nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=self.config.text_width ** -0.5)

    @property
    def context_length(self) -> int:
        return self.config.context_length

    @property
    def dtype(self) -> torch.dtype:
        return self.text_projection.dtype

    def encode_image(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) normalised -> (B, D) projected image features (not L2-normalised)."""
        return self.visual(image)

    def encode_text(self, tokens: Tensor) -> Tensor:
        """(B, L) long token ids, L <= context_length -> (B, D) projected text features (not L2-normalised)."""
        return self.encode_text_embeddings(self.token_embedding(tokens), tokens.argmax(dim=-1))

    def encode_text_embeddings(self, embeddings: Tensor, eot_index: Tensor) -> Tensor:
        """The text tower on given token embeddings: (B, L, W) without positions, (B,) long -> (B, D).

        The positional embedding is added here; the causal transformer, `ln_final`, the token at `eot_index`
        and `text_projection` follow, as in `encode_text`.
        """
        L = embeddings.shape[1]
        if L > self.context_length:
            raise ValueError(f"text of {L} tokens is longer than the context length {self.context_length}")
        x = embeddings + self.positional_embedding[:L].to(embeddings.dtype)
        x = self.ln_final(self.transformer(x, causal=True))
        x = x[torch.arange(x.shape[0], device=x.device), eot_index]
        return x @ self.text_projection

    def forward(self, image: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, H, W), (T, L) -> cosine-similarity logits scaled by exp(logit_scale): (B, T) and (T, B)."""
        img = F.normalize(self.encode_image(image), dim=-1)
        txt = F.normalize(self.encode_text(tokens), dim=-1)
        logits = self.logit_scale.exp() * img @ txt.t()
        return logits, logits.t()


def tiny_clip_config(vision: str = "vit", **overrides) -> ClipConfig:
    """A few-layer random CLIP for tests (no checkpoint): vision "vit" (patch 8, 32x32) or "resnet" (64x64).

    vocab_size and context_length stay OpenAI's (49,408, 77) so that `ClipTokenizer` output fits; override
    either for smaller tests.
    """
    if vision not in ("vit", "resnet"):
        raise ValueError(f"tiny_clip_config: vision must be 'vit' or 'resnet', got {vision!r}")
    # Every attention head is 16 wide, so `build_clip(state_dict, head_width=16)` infers these configs back.
    base = ClipConfig(embed_dim=16, image_size=(32, 32), vision_layers=2, vision_width=32, vision_heads=2,
                      patch_size=8, text_width=32, text_heads=2, text_layers=2, name="clip_tiny")
    if vision == "resnet":
        # stem width 8 -> a 256-wide pooled feature; 64x64 images give a 2x2 attention-pool grid
        base = replace(base, vision_layers=(1, 1, 1, 1), vision_width=8, vision_heads=16, image_size=(64, 64))
    return replace(base, **overrides)
