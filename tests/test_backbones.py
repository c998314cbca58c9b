"""Swin and EfficientNet-Lite0 backbones: official key names, strict loading, shapes, fuse hook, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlalign import assets
from vlalign.models.backbones import BACKBONE_BUILDERS, SWIN_BUILDERS, efficientnet_lite0
from vlalign.models.backbones.efficientnet_lite import (
    EfficientNetLite0,
    SameConv2d,
    efficientnet_lite0_classifier,
    load_efficientnet_lite0,
)
from vlalign.models.backbones.swin import (
    MASK_VALUE,
    DropPath,
    SwinTransformer,
    load_official_swin,
    relative_position_index,
    shifted_window_mask,
    window_partition,
)
from vlalign.models.loading import CheckpointMismatch, read_state_dict

# name -> (embed dim, depths, heads, parameters of the official ImageNet-1k model incl. its 1000-class head)
SWIN_SPECS = {
    "swin_tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24), 28_288_354),
    "swin_small": (96, (2, 2, 18, 2), (3, 6, 12, 24), 49_606_258),
    "swin_base": (128, (2, 2, 18, 2), (4, 8, 16, 32), 87_768_224),
    "swin_large": (192, (2, 2, 18, 2), (6, 12, 24, 48), 196_532_476),
}
BLOCK_KEYS = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
              "attn.proj.bias", "attn.relative_position_bias_table", "attn.relative_position_index",
              "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight",
              "mlp.fc2.bias")


def official_swin_keys(depths) -> set[str]:
    """The key set of an official Swin classification checkpoint, written out from its naming scheme."""
    keys = {"patch_embed.proj.weight", "patch_embed.proj.bias", "patch_embed.norm.weight",
            "patch_embed.norm.bias", "norm.weight", "norm.bias", "head.weight", "head.bias"}
    for i, depth in enumerate(depths):
        keys |= {f"layers.{i}.blocks.{j}.{k}" for j in range(depth) for k in BLOCK_KEYS}
        if i < len(depths) - 1:
            keys |= {f"layers.{i}.downsample.{k}" for k in ("reduction.weight", "norm.weight", "norm.bias")}
    return keys


def tiny_swin(window: int = 7, drop_path_rate: float = 0.0) -> SwinTransformer:
    return SwinTransformer(16, (2, 2, 2, 2), (1, 2, 2, 4), window_size=window, drop_path_rate=drop_path_rate)


def official_checkpoint(model: SwinTransformer) -> dict[str, torch.Tensor]:
    """What the official code saves for this config: head, final norm, shifted-window masks; no norm{i}."""
    stage_norms = tuple(f"norm{i}." for i in range(4))
    sd = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(stage_norms)}
    c = model.out_channels[-1]
    sd.update({"norm.weight": torch.randn(c), "norm.bias": torch.randn(c), "head.weight": torch.randn(10, c),
               "head.bias": torch.randn(10)})
    for i, stage in enumerate(model.layers):
        n = model.window_size**2
        shifted = range(1, len(stage.blocks), 2)
        sd.update({f"layers.{i}.blocks.{j}.attn_mask": torch.zeros(4, n, n) for j in shifted})
    return sd


@pytest.mark.parametrize("name", list(SWIN_SPECS))
def test_swin_variants_have_the_official_keys_and_sizes(name):
    embed, depths, heads, official_params = SWIN_SPECS[name]
    with torch.device("meta"):  # full size without allocating or initialising (Swin-L has 195M parameters)
        model = SWIN_BUILDERS[name](window_size=12)
    own = set(model.state_dict())
    expected = official_swin_keys(depths) - {"norm.weight", "norm.bias", "head.weight", "head.bias"}
    assert own == expected | {f"norm{i}.{p}" for i in range(4) for p in ("weight", "bias")}
    assert model.out_channels == (embed, 2 * embed, 4 * embed, 8 * embed)
    for i in range(4):
        table = model.state_dict()[f"layers.{i}.blocks.0.attn.relative_position_bias_table"]
        assert tuple(table.shape) == (23 * 23, heads[i])
    with torch.device("meta"):
        w7 = SWIN_BUILDERS[name](window_size=7)
    c = 8 * embed  # official count = ours - per-stage norms + final norm + 1000-class head, at window 7
    ours = sum(p.numel() for p in w7.parameters()) - 2 * sum(w7.out_channels) + 2 * c + c * 1000 + 1000
    assert ours == pytest.approx(official_params, rel=1e-6)


def test_relative_position_index_by_hand():
    # 2x2 window, tokens (0,0) (0,1) (1,0) (1,1); index = (dy + 1) * 3 + (dx + 1)
    expected = torch.tensor([[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]])
    assert torch.equal(relative_position_index(2), expected)


@pytest.mark.parametrize("H,W,ws", [(14, 21, 7), (24, 12, 12)])
def test_shift_mask_matches_the_official_slicing_and_softmax_gives_exact_zeros(H, W, ws):
    shift = ws // 2
    img = torch.zeros(1, H, W, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl] = cnt
            cnt += 1
    win = window_partition(img, ws)[0, :, :, 0]
    reference = (win[:, None, :] != win[:, :, None]).float() * MASK_VALUE
    mask = shifted_window_mask(H, W, ws, shift, torch.device("cpu"))
    assert torch.equal(mask[:, 0], reference)
    probs = (torch.randn(mask.shape[0], 3, ws * ws, ws * ws) + mask).softmax(-1)
    masked = (mask != 0).expand_as(probs)
    assert probs[masked].eq(0).all()  # exactly zero: no denormals to slow down the next matmul
    assert (probs[~masked] > torch.finfo(torch.float32).tiny).all()


def test_swin_odd_input_shapes_and_fuse_hook():
    torch.manual_seed(0)
    model = tiny_swin().eval()
    image = torch.rand(2, 3, 97, 130)
    calls = []

    def record(i, x):
        calls.append((i, tuple(x.shape)))
        return x

    with torch.no_grad():
        plain = model(image)
        hooked = model(image, fuse=record)
        zeroed = model(image, fuse=lambda i, x: torch.zeros_like(x) if i == 1 else x)
    sizes = [(25, 33), (13, 17), (7, 9), (4, 5)]
    assert [tuple(o.shape) for o in plain] == [(2, c, *s) for c, s in zip(model.out_channels, sizes)]
    assert calls == [(i, (2, c, *s)) for i, (c, s) in enumerate(zip(model.out_channels, sizes))]
    assert all(torch.equal(a, b) for a, b in zip(plain, hooked))
    assert all(torch.isfinite(o).all() for o in plain)
    assert torch.equal(zeroed[0], plain[0])
    assert zeroed[1].std() < 1e-6  # norm1 of a zero map is its bias: constant
    assert not torch.allclose(zeroed[2], plain[2]) and not torch.allclose(zeroed[3], plain[3])
    with pytest.raises(ValueError, match=r"fuse\(0"):
        model(image, fuse=lambda i, x: x[:, :1])


def test_drop_path_drops_whole_samples_in_training_only():
    drop = DropPath(0.5).train()
    torch.manual_seed(0)
    y = drop(torch.ones(200, 3, 4))
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}  # kept samples rescaled by 1 / (1 - p)
    assert (per_sample == per_sample[:, :1]).all() and 60 < (per_sample[:, 0] == 0).sum() < 140
    assert torch.equal(drop.eval()(torch.ones(5, 3)), torch.ones(5, 3))


def test_swin_every_parameter_gets_a_gradient():
    model = tiny_swin(drop_path_rate=0.0).train()  # drop path could skip a branch for the whole batch
    outs = model(torch.rand(2, 3, 50, 70))
    sum(o.square().mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_official_tiny_checkpoint_loads_strictly(tmp_path):
    torch.manual_seed(0)
    source = tiny_swin()
    torch.save({"model": official_checkpoint(source)}, tmp_path / "swin_tiny_official.pth")
    model = tiny_swin()
    report = load_official_swin(model, tmp_path / "swin_tiny_official.pth")
    for k, v in source.state_dict().items():
        if not k.startswith("norm"):
            assert torch.equal(model.state_dict()[k], v), k
    assert set(report.tolerated_unexpected) == {"norm.weight", "norm.bias", "head.weight", "head.bias",
                                                *(f"layers.{i}.blocks.1.attn_mask" for i in range(4))}
    assert set(report.tolerated_missing) == {f"norm{i}.{p}" for i in range(4) for p in ("weight", "bias")}
    assert torch.equal(model.norm0.weight, torch.ones(16))  # identity until trained


def test_window7_checkpoint_into_window12_interpolates_bias_tables(tmp_path):
    torch.manual_seed(0)
    sd = official_checkpoint(tiny_swin(window=7))
    torch.save({"model": sd}, tmp_path / "w7.pth")
    model = tiny_swin(window=12)
    load_official_swin(model, tmp_path / "w7.pth")
    key = "layers.2.blocks.1.attn.relative_position_bias_table"
    table = model.state_dict()[key]
    assert table.shape == (23 * 23, 2)
    # Bicubic 13 -> 23 with half-pixel centres samples the centre (offset 0, 0) exactly.
    assert torch.allclose(table.view(23, 23, 2)[11, 11], sd[key].view(13, 13, 2)[6, 6], atol=1e-6)
    assert torch.equal(model.layers[0].blocks[0].attn.relative_position_index, relative_position_index(12))


def test_resnet_checkpoint_into_swin_says_different_architecture(tmp_path):
    resnet = {"conv1.weight": torch.zeros(64, 3, 7, 7), "bn1.weight": torch.zeros(64),
              "fc.weight": torch.zeros(10)}
    resnet |= {f"layer1.{b}.conv{c}.weight": torch.zeros(64, 64, 3, 3) for b in range(3) for c in (1, 2)}
    torch.save(resnet, tmp_path / "resnet50.pth")
    with pytest.raises(CheckpointMismatch, match=r"(?s)resnet50\.pth.*different architecture"):
        load_official_swin(tiny_swin(), tmp_path / "resnet50.pth")


def test_same_padding_matches_tensorflow():
    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    x = torch.randn(1, 1, 9, 10)
    # TF "same": out = ceil(in / 2); pad total (out-1)*2+3-in: 2 rows (1 top, 1 bottom), 1 column (right)
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 1, 1, 1)), conv.weight, stride=2)
    assert torch.equal(conv(x), expected) and conv(x).shape[-2:] == (5, 5)


@pytest.mark.parametrize("kernel, stride, size", [(5, 1, (12, 7)), (3, 1, (8, 8)), (3, 2, (9, 11)), (5, 2, (8, 9))])
def test_same_padding_symmetric_and_asymmetric_paths_match_explicit_padding(kernel, stride, size):
    torch.manual_seed(0)
    conv = SameConv2d(6, 6, kernel, stride=stride, groups=6, bias=False)  # depthwise, as in MBConv
    x = torch.randn(2, 6, *size, requires_grad=True)
    pads = []
    for n in size[::-1]:  # (W, then H): the extra pixel at the end
        total = max((-(-n // stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(x, pads), conv.weight, stride=stride, groups=6)
    out = conv(x)
    assert out.shape == expected.shape and out.shape[-2:] == tuple(-(-n // stride) for n in size)
    torch.testing.assert_close(out, expected)
    g_out, = torch.autograd.grad(out.square().sum(), x)
    g_exp, = torch.autograd.grad(expected.square().sum(), x)
    torch.testing.assert_close(g_out, g_exp)


def test_efficientnet_shapes_fuse_and_gradients():
    torch.manual_seed(0)
    model = EfficientNetLite0().train()
    calls = []
    outs = model(torch.rand(2, 3, 97, 130), fuse=lambda i, x: calls.append((i, x.shape[1])) or x * 0.5)
    sizes = [(25, 33), (13, 17), (7, 9), (4, 5)]
    assert model.out_channels == (24, 40, 112, 320)
    assert [tuple(o.shape) for o in outs] == [(2, c, *s) for c, s in zip(model.out_channels, sizes)]
    assert calls == list(enumerate(model.out_channels))
    sum(o.square().mean() for o in outs).backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    model.eval()
    with torch.no_grad():
        plain = model(torch.rand(1, 3, 64, 64))
        zeroed = model(torch.rand(1, 3, 64, 64), fuse=lambda i, x: torch.zeros_like(x) if i == 0 else x)
    assert not torch.allclose(plain[3], zeroed[3])
    assert "efficientnet_lite0" in BACKBONE_BUILDERS


def test_efficientnet_folded_copy_computes_the_same_maps_without_batchnorms():
    torch.manual_seed(0)
    model = EfficientNetLite0()
    model.keep_last_stride()
    for m in model.modules():  # statistics and affines away from the identity, so that folding is tested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    folded = model.folded()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 1 + 15 * 3 + 2  # left intact
    x = torch.rand(2, 3, 64, 33)  # odd width: the asymmetric "same" padding path too
    with torch.no_grad():
        for a, b in zip(model(x), folded(x)):
            assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-4)
    assert folded.strides == model.strides and not folded.training


def test_efficientnet_keys_are_lukemelas_style():
    keys = set(EfficientNetLite0().state_dict())
    assert {"_conv_stem.weight", "_bn0.running_var", "_blocks.0._depthwise_conv.weight",
            "_blocks.15._project_conv.weight", "_blocks.15._bn2.num_batches_tracked"} <= keys
    assert "_blocks.0._expand_conv.weight" not in keys and "_blocks.1._expand_conv.weight" in keys
    assert not any(k.startswith(("_conv_head", "_fc", "_bn1.")) for k in keys)
    assert max(int(k.split(".")[1]) for k in keys if k.startswith("_blocks.")) == 15


def lite0_weights():
    try:
        return assets.efficientnet_lite0_weights()
    except assets.AssetMissing as e:
        pytest.skip(f"real EfficientNet-Lite0 weights absent: {e}")


def test_real_lite0_weights_load_strictly_into_the_backbone():
    path = lite0_weights()
    model = efficientnet_lite0(pretrained=path)
    report = load_efficientnet_lite0(model, path)
    assert set(report.tolerated_unexpected) == {"_conv_head.weight", "_fc.weight", "_fc.bias", "_bn1.weight",
                                                "_bn1.bias", "_bn1.running_mean", "_bn1.running_var",
                                                "_bn1.num_batches_tracked"}
    assert not report.tolerated_missing
    key = "_blocks.7._project_conv.weight"
    assert torch.equal(model.state_dict()[key], read_state_dict(path)[key])


def test_real_lite0_classifies_the_scikit_image_cat():
    lite0_weights()
    from PIL import Image

    try:
        path = assets.skimage_image("chelsea.png")
    except assets.AssetMissing as e:
        pytest.skip(str(e))
    model = efficientnet_lite0_classifier(pretrained=True).eval()
    image = Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255  # [0, 1]: normalised inside
    with torch.no_grad():
        probs = model(x).softmax(-1)[0]
    assert probs.argmax().item() == 285  # ImageNet "Egyptian cat"
    assert probs[285] > 0.5
