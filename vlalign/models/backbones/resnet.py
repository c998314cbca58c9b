"""ResNet-101 and Wide-ResNet-101-2 (He et al. 2016; Zagoruyko & Komodakis 2016) as dense backbones, with the
state-dict keys of torchvision's checkpoints.

Keys: `conv1`, `bn1`, `layer{1..4}.{i}.conv1/bn1/conv2/bn2/conv3/bn3`, `layer{1..4}.0.downsample.0/1` (the
1x1 projection and its BN), and `fc` (the ImageNet classifier, which the dense backbone leaves out and
`load_torchvision_resnet` tolerates by name). Bottlenecks stride in their 3x3 conv ("ResNet v1.5"), as in
torchvision. Wide-ResNet-101-2 is ResNet-101 with bottleneck widths doubled (`width_per_group=128`): the same
keys and output channels, wider `conv1/conv2/bn1/bn2`.

res5 (`layer4`) keeps stride 16, as in EFN's release (fengguang94/CEFNet), which sets layer4's first stride
to 1 and keeps every 3x3 at dilation 1. `res5_dilation=2` gives torchvision's
`replace_stride_with_dilation=[False, False, True]` instead (first block dilation 1, the others 2: the same
receptive field as the strided layer, the DeepLab way). Either way the outputs have strides 4, 8, 16, 16.

No ResNet weights are available offline: pass the path of a torchvision checkpoint, e.g.
`resnet101-63fe2227.pth` or `wide_resnet101_2-32ee1156.pth` (any format `read_state_dict` reads).
Order of the file: block, model, loading, builders.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlalign.models.backbones.swin import IMAGENET_MEAN, IMAGENET_STD  # torchvision's constants too
from vlalign.models.loading import LoadReport, load_strict, read_state_dict

__all__ = ["ResNet", "resnet101", "wide_resnet101_2", "load_torchvision_resnet", "RESNET_TOLERATED",
           "RESNET_BUILDERS"]

Fuse = Callable[[int, Tensor], Tensor]


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (stride, dilation) -> 1x1 expand (x4), identity or projected shortcut."""

    expansion = 4

    def __init__(self, cin: int, planes: int, width: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:  # torchvision's rule: project when the shape changes
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        """(B, cin, H, W) -> (B, 4*planes, H/stride, W/stride)."""
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(y + shortcut)


class ResNet(nn.Module):
    """Dense bottleneck ResNet: `forward(image) -> [res2, res3, res4, res5]` at strides 4, 8, 16, 16.

    depths/planes: blocks and base widths of the 4 stages (ResNet-101: (3, 4, 23, 3), (64, 128, 256, 512));
    width_per_group: 64 for ResNet, 128 for Wide-ResNet-*-2 (the 3x3 width is planes * width_per_group / 64);
    stem_channels: width of the 7x7 stem (64); smaller values only make tiny test models.
    `image` is Bx3xHxW in [0, 1], normalised here with ImageNet `pixel_mean`/`pixel_std` buffers.
    """

    strides = (4, 8, 16, 16)

    def __init__(self, depths=(3, 4, 23, 3), planes=(64, 128, 256, 512), width_per_group: int = 64,
                 stem_channels: int = 64, res5_dilation: int = 1):
        super().__init__()
        if res5_dilation not in (1, 2):
            raise ValueError(f"res5_dilation must be 1 (EFN release) or 2 (torchvision's dilated layer4), "
                             f"got {res5_dilation!r}")
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.conv1 = nn.Conv2d(3, stem_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.out_channels = tuple(p * Bottleneck.expansion for p in planes)
        cin = stem_channels
        for i, (depth, p) in enumerate(zip(depths, planes)):
            width = p * width_per_group // 64
            blocks = []
            for j in range(depth):
                stride = 2 if j == 0 and i in (1, 2) else 1  # res5 keeps stride 16 (see the module docstring)
                # torchvision's dilated layer4: the first block keeps the previous dilation (1)
                dilation = res5_dilation if i == 3 and j > 0 else 1
                blocks.append(Bottleneck(cin, p, width, stride, dilation))
                cin = p * Bottleneck.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation, so that a randomly initialised backbone behaves like theirs
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, image: Tensor, fuse: Fuse | None = None) -> list[Tensor]:
        """image Bx3xHxW in [0,1] -> 4 maps (B, C_i, H/s_i, W/s_i), s_i = 4, 8, 16, 16 (rounded up).

        fuse(i, feature BxCxHxW) -> BxCxHxW is called after layer{i+1}; what it returns is both the i-th
        output and what the next layer consumes.
        """
        x = F.relu(self.bn1(self.conv1((image - self.pixel_mean) / self.pixel_std)))
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        outs = []
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            if fuse is not None:
                fused = fuse(i, x)
                if fused.shape != x.shape:
                    raise ValueError(f"fuse({i}, ...) returned {tuple(fused.shape)}, expected {tuple(x.shape)}")
                x = fused
            outs.append(x)
        return outs


# torchvision's classification checkpoints hold the ImageNet head; the dense backbone has none.
RESNET_TOLERATED: dict[str, str] = {
    r"fc\.(weight|bias)": "ImageNet classifier, unused by the dense backbone",
}


def load_torchvision_resnet(model: ResNet, path: str | Path) -> LoadReport:
    """Strictly load a torchvision ResNet / Wide-ResNet checkpoint (its `fc` is tolerated, nothing else)."""
    return load_strict(model, read_state_dict(path), tolerated=RESNET_TOLERATED, source=str(path))


def _build(width_per_group: int, res5_dilation: int, pretrained: bool | str | Path | None) -> ResNet:
    if pretrained is True:
        raise ValueError("no offline ResNet weights exist: pass pretrained=<path of a torchvision checkpoint, "
                         "e.g. resnet101-63fe2227.pth or wide_resnet101_2-32ee1156.pth>")
    model = ResNet((3, 4, 23, 3), width_per_group=width_per_group, res5_dilation=res5_dilation)
    if pretrained:
        load_torchvision_resnet(model, pretrained)
    return model


def resnet101(res5_dilation: int = 1, pretrained: str | Path | None = None) -> ResNet:
    """ResNet-101 (EFN paper); `pretrained`: path of torchvision's resnet101 checkpoint."""
    return _build(64, res5_dilation, pretrained)


def wide_resnet101_2(res5_dilation: int = 1, pretrained: str | Path | None = None) -> ResNet:
    """Wide-ResNet-101-2 (EFN release); `pretrained`: path of torchvision's wide_resnet101_2 checkpoint."""
    return _build(128, res5_dilation, pretrained)


RESNET_BUILDERS: dict[str, Callable[..., ResNet]] = {
    "resnet101": resnet101,
    "wide_resnet101_2": wide_resnet101_2,
}
