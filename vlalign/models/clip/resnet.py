"""CLIP's ModifiedResNet image tower (RN50, RN101, RN50x4, ...), with OpenAI's state-dict keys.

It differs from a torchvision ResNet in three places:
- the stem is three 3x3 convolutions (`conv1..3`, `bn1..3`) followed by a 2x2 average pool;
- a strided bottleneck downsamples with an average pool before `conv3` (anti-aliased), and its shortcut
  with an average pool before the 1x1 convolution (`downsample.0/1`, the pool being `downsample.-1`);
- the global pool is `attnpool`, one attention layer whose single query is the mean of the feature map
  (`attnpool.positional_embedding`, `q_proj`, `k_proj`, `v_proj`, `c_proj`).

`last_stride=1` keeps layer4 at stride 16, as CLIP-ReID does for person crops. The attention pool's positional
embedding then covers the (H/16, W/16) grid.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ModifiedResNet", "AttentionPool2d", "Bottleneck"]


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> (avg-pool if strided) -> 1x1 x4, with a pooled, projected shortcut when the shape changes."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            # OpenAI's key names: the pool is "-1" (no parameters), so the conv and BN keep indices 0 and 1.
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride) if stride > 1 else nn.Identity()),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x: Tensor) -> Tensor:
        """(B, inplanes, H, W) -> (B, 4 * planes, H / stride, W / stride)."""
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(self.avgpool(y)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(y + shortcut)


class AttentionPool2d(nn.Module):
    """Attention pooling: the mean token (+ position 0) queries all tokens (+ their positions); one layer."""

    def __init__(self, grid: tuple[int, int], embed_dim: int, num_heads: int, output_dim: int | None = None):
        super().__init__()
        self.grid = tuple(grid)
        self.num_heads = num_heads
        self.positional_embedding = nn.Parameter(torch.randn(1 + grid[0] * grid[1], embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim or embed_dim)
        std = embed_dim ** -0.5  # OpenAI's initialisation
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.c_proj):
            nn.init.normal_(proj.weight, std=std)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) with (H, W) = grid -> (B, output_dim)."""
        if tuple(x.shape[-2:]) != self.grid:
            raise ValueError(f"attnpool got a {tuple(x.shape[-2:])} feature map but its positional embedding "
                             f"covers {self.grid}: build or load the model for this image size")
        x = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + self.positional_embedding.to(x.dtype)
        B, N, C = x.shape
        h = self.num_heads
        q = self.q_proj(x[:, :1]).view(B, 1, h, C // h).transpose(1, 2)  # (B, h, 1, C/h)
        k = self.k_proj(x).view(B, N, h, C // h).transpose(1, 2)  # (B, h, N, C/h)
        v = self.v_proj(x).view(B, N, h, C // h).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, h, 1, C/h)
        return self.c_proj(y.transpose(1, 2).reshape(B, C))


class ModifiedResNet(nn.Module):
    """CLIP's ResNet image tower; `width` is the stem width (64 for RN50), the pooled feature is 32 x width."""

    def __init__(self, layers: tuple[int, int, int, int], output_dim: int, heads: int,
                 image_size: tuple[int, int] = (224, 224), width: int = 64, last_stride: int = 2):
        super().__init__()
        self.image_size = tuple(image_size)
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=last_stride)
        self.stride = 16 * last_stride
        self.grid = (self.image_size[0] // self.stride, self.image_size[1] // self.stride)
        self.attnpool = AttentionPool2d(self.grid, width * 32, heads, output_dim)
        # OpenAI zero-initialises every bn3 weight; we do not, so that a randomly initialised tower passes
        # gradients to every parameter (the checkpoint's values replace these anyway).

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, image: Tensor, return_all: bool = False) -> Tensor | dict[str, Tensor]:
        """image (B, 3, H, W) normalised, (H, W) = `image_size`.

        Returns (B, D), the attention-pooled projection; with `return_all`, a dict:
        - "pre": (B, 32 * width) global *average* pool of layer4, the attention pool's input pooled (CLIP-ReID's
          RN50 `img_feature`; the attention pool has no un-projected output of its own);
        - "proj": (B, D) the attention pool's output (`encode_image`'s output);
        - "tokens": (B, h * w, 32 * width) the layer4 feature map, row-major;
        - "penultimate": (B, 16 * width) global average pool of layer3 (CLIP-ReID's RN50 triplet feature).
        """
        if tuple(image.shape[-2:]) != self.image_size:
            raise ValueError(f"image of size {tuple(image.shape[-2:])} given to a ResNet built for "
                             f"{self.image_size}: build or load the model with image_size="
                             f"{tuple(image.shape[-2:])} (the attention pool's positions are resized then)")
        x = F.relu(self.bn1(self.conv1(image)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        x = self.avgpool(x)
        x3 = self.layer3(self.layer2(self.layer1(x)))
        x4 = self.layer4(x3)
        proj = self.attnpool(x4)
        if not return_all:
            return proj
        return {"pre": x4.mean(dim=(2, 3)), "proj": proj, "tokens": x4.flatten(2).transpose(1, 2),
                "penultimate": x3.mean(dim=(2, 3))}
