"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" edge variant) with lukemelas-style state-dict keys.

Lite differs from EfficientNet-B0 by: no squeeze-and-excitation, ReLU6 instead of swish, and a stem (32) and
head (1280) that are not scaled. Convolutions use TensorFlow "same" padding, computed per input size
(asymmetric: the extra pixel goes to the bottom/right), so the ported TF weights see what they were trained
on; for stride 2 this gives ceil(H / 2) outputs for any H. BatchNorm uses TF's eps 1e-3 and momentum 0.01.

`EfficientNetLite0` is the dense backbone (4 outputs at strides 4/8/16/32); `EfficientNetLite0Classifier` adds
the ImageNet head under the same key namespace, so the released checkpoint loads into it with no exceptions.
Order of the file: blocks, models, loading, builders.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from vlalign import assets
from vlalign.models.backbones.swin import DropPath  # shared stochastic depth (one implementation)
from vlalign.models.loading import LoadReport, load_strict, read_state_dict

__all__ = ["EfficientNetLite0", "EfficientNetLite0Classifier", "efficientnet_lite0",
           "efficientnet_lite0_classifier", "load_efficientnet_lite0", "LITE0_HEAD_TOLERATED"]

Fuse = Callable[[int, Tensor], Tensor]

# (repeats, kernel, stride, expand ratio, out channels) per stage: Lite0 = B0's table with width/depth 1.0.
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
# Stages whose output is a backbone feature (the last stage at strides 4, 8, 16, 32).
FEATURE_STAGES = (1, 2, 4, 6)
STEM, HEAD = 32, 1280
BN = {"eps": 1e-3, "momentum": 0.01}  # TF's epsilon and decay 0.99 (PyTorch momentum = 1 - decay)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding: output ceil(in / stride), the odd pixel padded at the end."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(x.shape[:1:-1], self.kernel_size[::-1], self.stride[::-1]):  # (W, then H)
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if pads[0] == pads[1] and pads[2] == pads[3]:  # symmetric (every stride-1 conv): the conv pads itself,
            # which saves a padded copy of the input and its backward (~5% of a lite re-id training step)
            return F.conv2d(x, self.weight, self.bias, self.stride, (pads[2], pads[0]), self.dilation, self.groups)
        return super().forward(F.pad(x, pads))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> linear 1x1 project; identity skip if shapes match."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, drop_path: float):
        super().__init__()
        mid = cin * expand
        if expand != 1:  # the checkpoint has no _expand_conv/_bn0 for the first block (ratio 1)
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **BN)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **BN)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **BN)
        self.skip = stride == 1 and cin == cout
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        """(B, cin, H, W) -> (B, cout, ceil(H/stride), ceil(W/stride))."""
        y = x
        if hasattr(self, "_expand_conv"):
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))  # no activation: the projection is linear
        return x + self.drop_path(y) if self.skip else y


class EfficientNetLite0(nn.Module):
    """Dense backbone: `forward(image) -> [stride 4, 8, 16, 32 features]` with 24, 40, 112, 320 channels.

    `image` is Bx3xHxW in [0, 1]; it is normalised here with `pixel_mean`/`pixel_std`, the [0, 1]-scale form
    of the (x - 127) / 128 on 0-255 pixels that the weights were trained with.
    """

    strides = (4, 8, 16, 32)
    out_channels = tuple(LITE0_STAGES[i][4] for i in FEATURE_STAGES)

    def __init__(self, drop_path_rate: float = 0.2):
        super().__init__()
        self.register_buffer("pixel_mean", torch.full((1, 3, 1, 1), 127 / 255), persistent=False)
        self.register_buffer("pixel_std", torch.full((1, 3, 1, 1), 128 / 255), persistent=False)
        self._conv_stem = SameConv2d(3, STEM, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(STEM, **BN)
        total = sum(s[0] for s in LITE0_STAGES)
        blocks, self.stage_ends, cin = [], [], STEM
        for repeats, kernel, stride, expand, cout in LITE0_STAGES:
            for r in range(repeats):
                # drop-connect grows linearly with depth, as in the reference implementation
                rate = drop_path_rate * len(blocks) / total
                blocks.append(MBConv(cin, cout, kernel, stride if r == 0 else 1, expand, rate))
                cin = cout
            self.stage_ends.append(len(blocks))  # index one past the stage's last block
        self._blocks = nn.ModuleList(blocks)

    def keep_last_stride(self) -> None:
        """Re-id's "last stride 1": the stride-32 stage's first block keeps stride 1, so the last map is at
        stride 16 (twice the resolution, same weights)."""
        first = self.stage_ends[FEATURE_STAGES[2]]  # the block after the stride-16 output
        self._blocks[first]._depthwise_conv.stride = (1, 1)  # 112 -> 192 channels: no residual to adjust
        self.strides = (*self.strides[:3], 16)

    def folded(self) -> EfficientNetLite0:
        """An inference copy (eval mode) with every backbone BatchNorm folded into the convolution before it:
        the same function up to float rounding, about 1.2x faster on the CPU (each BN is a pass over its map)."""
        out = copy.deepcopy(self).eval()
        pairs = [(out, "_conv_stem", "_bn0")]
        for block in out._blocks:
            if hasattr(block, "_expand_conv"):
                pairs.append((block, "_expand_conv", "_bn0"))
            pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
        for module, conv, bn in pairs:
            setattr(module, conv, fuse_conv_bn_eval(getattr(module, conv), getattr(module, bn)))
            setattr(module, bn, nn.Identity())
        return out

    def forward(self, image: Tensor, fuse: Fuse | None = None) -> list[Tensor]:
        """image Bx3xHxW in [0,1] -> 4 maps (B, C_i, ceil(H/s_i), ceil(W/s_i)) for s_i in 4, 8, 16, 32.

        fuse(i, feature BxCxHxW) -> BxCxHxW is called after each of the 4 feature stages (before the next
        stride-2 block); what it returns is both the i-th output and what the following blocks consume.
        """
        x = F.relu6(self._bn0(self._conv_stem((image - self.pixel_mean) / self.pixel_std)))
        ends = {self.stage_ends[s]: i for i, s in enumerate(FEATURE_STAGES)}  # block count -> output index
        outs = []
        for n, block in enumerate(self._blocks, start=1):
            x = block(x)
            if n in ends:
                if fuse is not None:
                    fused = fuse(ends[n], x)
                    if fused.shape != x.shape:
                        raise ValueError(f"fuse({ends[n]}, ...) returned {tuple(fused.shape)}, "
                                         f"expected {tuple(x.shape)}")
                    x = fused
                outs.append(x)
        return outs


class EfficientNetLite0Classifier(EfficientNetLite0):
    """The backbone plus the ImageNet head (1x1 conv to 1280, BN, ReLU6, average pool, dropout, linear)."""

    def __init__(self, num_classes: int = 1000, drop_path_rate: float = 0.2, dropout: float = 0.2):
        super().__init__(drop_path_rate)
        self._conv_head = nn.Conv2d(self.out_channels[-1], HEAD, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(HEAD, **BN)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD, num_classes)

    def forward(self, image: Tensor, fuse: Fuse | None = None) -> Tensor:  # type: ignore[override]
        """image Bx3xHxW in [0,1] -> class logits (B, num_classes)."""
        x = super().forward(image, fuse)[-1]
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(x.mean(dim=(2, 3))))


# The released checkpoint holds the classifier; the dense backbone leaves it out, and says why.
LITE0_HEAD_TOLERATED: dict[str, str] = {
    r"_conv_head\.weight": "ImageNet classifier head, unused by the dense backbone",
    r"_bn1\.(weight|bias|running_mean|running_var|num_batches_tracked)": "BN of the ImageNet classifier "
                                                                         "head, unused by the dense backbone",
    r"_fc\.(weight|bias)": "ImageNet classifier, unused by the dense backbone",
}


def load_efficientnet_lite0(model: EfficientNetLite0, path: str | Path | None = None) -> LoadReport:
    """Strictly load lukemelas-style Lite0 weights (default: the offline asset) into either model."""
    path = assets.efficientnet_lite0_weights() if path is None else Path(path)
    tolerated = {} if isinstance(model, EfficientNetLite0Classifier) else LITE0_HEAD_TOLERATED
    return load_strict(model, read_state_dict(path), tolerated=tolerated, source=str(path))


def efficientnet_lite0(
    pretrained: bool | str | Path = False, drop_path_rate: float = 0.2
) -> EfficientNetLite0:
    """The dense backbone; `pretrained=True` loads the ImageNet weights from the offline asset (raising
    `AssetMissing` with the install command when it is absent), a path loads that file."""
    model = EfficientNetLite0(drop_path_rate)
    if pretrained:
        load_efficientnet_lite0(model, None if pretrained is True else pretrained)
    return model


def efficientnet_lite0_for_model(pretrained: bool | str | Path = False, **kwargs) -> EfficientNetLite0:
    """`efficientnet_lite0` for the segmentation builders: with `pretrained=True` and the asset absent, a warning
    and random weights instead of an error, so that tests and `from_pretrained` need no asset (a path must exist)."""
    if pretrained is True:
        try:
            assets.efficientnet_lite0_weights()
        except assets.AssetMissing as e:
            warnings.warn(f"EfficientNet-Lite0 starts from random weights: {e}", stacklevel=3)
            pretrained = False
    return efficientnet_lite0(pretrained=pretrained, **kwargs)


def efficientnet_lite0_classifier(pretrained: bool | str | Path = False) -> EfficientNetLite0Classifier:
    """The ImageNet classifier (1000 classes); `pretrained` as in `efficientnet_lite0`."""
    model = EfficientNetLite0Classifier()
    if pretrained:
        load_efficientnet_lite0(model, None if pretrained is True else pretrained)
    return model
