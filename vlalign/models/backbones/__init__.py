"""Image backbones in plain PyTorch with the official checkpoints' key names.

Every backbone takes Bx3xHxW images in [0, 1] (normalised inside with its own `pixel_mean`/`pixel_std`
buffers), exposes `out_channels` (4 ints) and `strides` ((4, 8, 16, 32); the ResNets keep res5 at 16), and
`forward(image, fuse=None)` returns the 4 feature maps BxCxHxW; `fuse(stage_index, feature) -> feature` runs
after each stage and its output continues through the encoder (language fusion inside the visual encoder).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from vlalign.models.backbones.efficientnet_lite import (
    EfficientNetLite0,
    efficientnet_lite0,
    efficientnet_lite0_for_model,
)
from vlalign.models.backbones.resnet import (
    RESNET_BUILDERS,
    ResNet,
    load_torchvision_resnet,
    resnet101,
    wide_resnet101_2,
)
from vlalign.models.backbones.swin import (
    SWIN_BUILDERS,
    SwinTransformer,
    load_official_swin,
    swin_base,
    swin_large,
    swin_small,
    swin_tiny,
)

__all__ = ["BACKBONE_BUILDERS", "build_backbone", "SWIN_BUILDERS", "RESNET_BUILDERS", "SwinTransformer",
           "EfficientNetLite0",
           "ResNet", "efficientnet_lite0", "efficientnet_lite0_for_model", "load_official_swin",
           "load_torchvision_resnet", "swin_tiny",
           "swin_small", "swin_base", "swin_large", "resnet101", "wide_resnet101_2"]

# Backbone name -> builder. Swin builders take (window_size, drop_path_rate, pretrained=path);
# efficientnet_lite0 takes (pretrained=bool|path, drop_path_rate); resnet101 / wide_resnet101_2 take
# (res5_dilation, pretrained=path) and output strides 4, 8, 16, 16 (res5 at stride 16, as in EFN).
BACKBONE_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    **SWIN_BUILDERS,
    **RESNET_BUILDERS,
    "efficientnet_lite0": efficientnet_lite0,
}


def build_backbone(name: str, kwargs: dict | None = None, pretrained: bool | str | None = None) -> nn.Module:
    """The backbone a model config names (every segmenter's `backbone`, `backbone_kwargs`, `pretrained_backbone`).

    name: a key of BACKBONE_BUILDERS, or "swin" / "resnet" for a custom size (tests, experiments: the class's own
    arguments in `kwargs`, random weights). pretrained: False/None = random; a path = that official checkpoint,
    loaded strictly; True = the offline weights, which exist for efficientnet_lite0 only.
    """
    kwargs = dict(kwargs or {})
    if name == "efficientnet_lite0":
        return efficientnet_lite0_for_model(pretrained, **kwargs)
    custom = {"swin": SwinTransformer, "resnet": ResNet}
    if name in custom:
        if pretrained:
            raise ValueError(f"pretrained weights need a named variant ({sorted(BACKBONE_BUILDERS)}), not "
                             f"backbone={name!r}")
        return custom[name](**kwargs)
    if name not in BACKBONE_BUILDERS:
        raise ValueError(f"unknown backbone {name!r}: use one of {sorted(BACKBONE_BUILDERS)}, 'swin' or 'resnet'")
    if pretrained is True:
        raise ValueError(f"no offline {name} weights exist: pass pretrained_backbone=<path of the official "
                         f"checkpoint, e.g. swin_base_patch4_window12_384_22k.pth / resnet101-63fe2227.pth> or False")
    return BACKBONE_BUILDERS[name](pretrained=pretrained or None, **kwargs)
