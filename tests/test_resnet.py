"""ResNet-101 / Wide-ResNet-101-2: torchvision key names (written here independently of the model), strict
loading of tiny random checkpoints, clear errors for the wrong architecture, res5 at stride 16."""

from __future__ import annotations

import pytest
import torch

from vlalign.models.backbones import BACKBONE_BUILDERS, ResNet, load_torchvision_resnet
from vlalign.models.backbones.resnet import resnet101, wide_resnet101_2
from vlalign.models.loading import CheckpointMismatch

TINY = {"depths": (1, 2, 1, 2), "planes": (4, 8, 16, 32), "stem_channels": 8}


pytestmark = pytest.mark.usefixtures("one_thread")


def torchvision_keys(depths, planes, width_per_group=64, stem=64, num_classes=1000) -> dict[str, tuple]:
    """Key -> shape of torchvision's `ResNet(Bottleneck, depths, width_per_group=...)` state dict."""
    keys: dict[str, tuple] = {}

    def bn(prefix, c):
        keys.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
                     f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()})

    keys["conv1.weight"] = (stem, 3, 7, 7)
    bn("bn1", stem)
    cin = stem
    for i, (depth, p) in enumerate(zip(depths, planes), start=1):
        width = p * width_per_group // 64
        for j in range(depth):
            pre = f"layer{i}.{j}"
            keys[f"{pre}.conv1.weight"] = (width, cin, 1, 1)
            bn(f"{pre}.bn1", width)
            keys[f"{pre}.conv2.weight"] = (width, width, 3, 3)
            bn(f"{pre}.bn2", width)
            keys[f"{pre}.conv3.weight"] = (4 * p, width, 1, 1)
            bn(f"{pre}.bn3", 4 * p)
            if j == 0:  # torchvision projects the shortcut of every stage's first block here
                keys[f"{pre}.downsample.0.weight"] = (4 * p, cin, 1, 1)
                bn(f"{pre}.downsample.1", 4 * p)
            cin = 4 * p
    keys["fc.weight"], keys["fc.bias"] = (num_classes, cin), (num_classes,)
    return keys


def random_checkpoint(keys: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.tensor(7) if k.endswith("num_batches_tracked") else torch.randn(shape, generator=g)
            for k, shape in keys.items()}


@pytest.mark.parametrize("width_per_group", [64, 128])
def test_tiny_torchvision_checkpoint_loads_strictly(tmp_path, width_per_group):
    state = random_checkpoint(torchvision_keys(TINY["depths"], TINY["planes"], width_per_group, stem=8))
    path = tmp_path / "resnet.pth"
    torch.save(state, path)  # torchvision's files are plain state dicts saved this way
    model = ResNet(**TINY, width_per_group=width_per_group)
    report = load_torchvision_resnet(model, path)
    assert report.loaded == len(state) - 2
    assert set(report.tolerated_unexpected) == {"fc.weight", "fc.bias"}
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items() if k in own)
    # the normalisation constants are buffers that are not saved
    assert "pixel_mean" not in own and model.pixel_std.shape == (1, 3, 1, 1)


def test_paper_scale_keys_and_sizes_match_torchvision():
    """Full ResNet-101 / WRN-101-2 on the meta device: every key and shape of torchvision's checkpoints."""
    for builder, wpg, params in ((resnet101, 64, 42.50e6), (wide_resnet101_2, 128, 124.84e6)):
        with torch.device("meta"):
            model = builder()
        expected = torchvision_keys((3, 4, 23, 3), (64, 128, 256, 512), wpg)
        expected = {k: v for k, v in expected.items() if not k.startswith("fc.")}
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
        # torchvision: 44.55M / 126.89M parameters including the 2.05M of the ImageNet classifier
        assert abs(sum(p.numel() for p in model.parameters()) - params) < 0.01e6
        assert model.out_channels == (256, 512, 1024, 2048) and model.strides == (4, 8, 16, 16)
    assert BACKBONE_BUILDERS["resnet101"] is resnet101 and BACKBONE_BUILDERS["wide_resnet101_2"] is wide_resnet101_2


def test_wrong_architecture_is_refused_with_the_keys_named(tmp_path):
    wide = tmp_path / "wide.pth"
    torch.save(random_checkpoint(torchvision_keys(TINY["depths"], TINY["planes"], 128, stem=8)), wide)
    with pytest.raises(CheckpointMismatch, match=r"shape mismatch .*layer1\.0\.conv1\.weight"):
        load_torchvision_resnet(ResNet(**TINY), wide)  # a WRN checkpoint into a plain ResNet

    other = tmp_path / "swin.pth"
    torch.save({"patch_embed.proj.weight": torch.zeros(8, 3, 4, 4), "head.weight": torch.zeros(10, 8)}, other)
    with pytest.raises(CheckpointMismatch) as err:
        load_torchvision_resnet(ResNet(**TINY), other)
    message = str(err.value)
    assert "different architecture" in message and "swin.pth" in message
    assert "conv1.weight" in message and "patch_embed.proj.weight" in message

    deeper = tmp_path / "deeper.pth"
    torch.save(random_checkpoint(torchvision_keys((1, 2, 2, 2), TINY["planes"], stem=8)), deeper)
    with pytest.raises(CheckpointMismatch, match=r"unexpected in the checkpoint .*layer3\.1\.conv1\.weight"):
        load_torchvision_resnet(ResNet(**TINY), deeper)


@pytest.mark.parametrize("res5_dilation", [1, 2])
def test_res5_keeps_stride_16(res5_dilation):
    torch.manual_seed(0)
    model = ResNet(**TINY, res5_dilation=res5_dilation).eval()
    seen = []

    def fuse(i, x):
        seen.append((i, tuple(x.shape)))
        return x + 1.0  # the fused value is what the next stage consumes

    image = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        feats = model(image, fuse=fuse)
        plain = model(image)
    shapes = [(2, 16, 16, 24), (2, 32, 8, 12), (2, 64, 4, 6), (2, 128, 4, 6)]
    assert [tuple(f.shape) for f in feats] == shapes and seen == list(enumerate(shapes))
    assert not torch.allclose(feats[3], plain[3])
    layer4 = model.layer4
    assert layer4[0].conv2.stride == (1, 1) and layer4[0].downsample[0].stride == (1, 1)
    assert layer4[0].conv2.dilation == (1, 1)  # torchvision's dilated layer4 also keeps its first block at 1
    assert layer4[1].conv2.dilation == (res5_dilation,) * 2 and layer4[1].conv2.padding == (res5_dilation,) * 2
    assert model.layer3[0].conv2.stride == (2, 2)

    with pytest.raises(ValueError, match=r"fuse\(0"):
        model(image, fuse=lambda i, x: x[:, :1])


def test_builder_errors_say_what_to_do():
    with pytest.raises(ValueError, match="torchvision checkpoint"):
        resnet101(pretrained=True)
    with pytest.raises(ValueError, match="res5_dilation"):
        ResNet(**TINY, res5_dilation=4)
