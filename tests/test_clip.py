"""CLIP towers and loaders on tiny random checkpoints in each format: Hugging Face CLIPModel (same features as
`transformers`), OpenAI/open_clip state dicts and TorchScript archives (strict round trips), positional-embedding
resizing, gradients, and the published parameter counts of the real architectures."""

from __future__ import annotations

import pickle
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from vlalign.models.clip import (
    CLIP,
    ClipConfig,
    build_clip,
    load_clip,
    read_torchscript_state_dict,
    resize_pos_embed,
    tiny_clip_config,
)
from vlalign.models.loading import CheckpointMismatch, NotACheckpoint

pytestmark = pytest.mark.usefixtures("one_thread")

VIT_KEYS = ["visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding", "visual.ln_pre.weight",
            "visual.transformer.resblocks.1.attn.in_proj_weight", "visual.transformer.resblocks.1.attn.in_proj_bias",
            "visual.transformer.resblocks.1.attn.out_proj.weight", "visual.transformer.resblocks.1.ln_1.weight",
            "visual.transformer.resblocks.1.mlp.c_fc.weight", "visual.transformer.resblocks.1.mlp.c_proj.bias",
            "visual.transformer.resblocks.1.ln_2.bias", "visual.ln_post.weight", "visual.proj"]
RESNET_KEYS = ["visual.conv1.weight", "visual.conv2.weight", "visual.conv3.weight", "visual.bn1.running_mean",
               "visual.bn3.weight", "visual.layer1.0.conv3.weight", "visual.layer2.0.downsample.0.weight",
               "visual.layer4.0.downsample.1.running_var", "visual.attnpool.positional_embedding",
               "visual.attnpool.q_proj.weight", "visual.attnpool.k_proj.bias", "visual.attnpool.v_proj.weight",
               "visual.attnpool.c_proj.weight"]
TEXT_KEYS = ["token_embedding.weight", "positional_embedding", "transformer.resblocks.1.attn.in_proj_weight",
             "transformer.resblocks.0.mlp.c_fc.weight", "ln_final.weight", "text_projection", "logit_scale"]


def _tokens(vocab: int, rows: list[list[int]], length: int) -> torch.Tensor:
    """SOT = vocab - 2, EOT = vocab - 1 (the largest id, as in OpenAI's vocabulary), zero padding."""
    out = torch.zeros(len(rows), length, dtype=torch.long)
    for i, ids in enumerate(rows):
        out[i, :len(ids) + 2] = torch.tensor([vocab - 2, *ids, vocab - 1])
    return out


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    text = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                max_position_embeddings=16, bos_token_id=98, eos_token_id=99, pad_token_id=0)
    vision = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=40, patch_size=8,
                  image_size=32)
    model = transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision,
                                                           projection_dim=16)).eval()
    path = tmp_path_factory.mktemp("hf_clip")
    model.save_pretrained(path)
    return path, model


def test_hf_clipmodel_gives_transformers_features(hf_folder, tmp_path):
    path, hf = hf_folder
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    tokens = _tokens(100, [[5, 6, 7], [10, 11, 12, 13, 14, 15, 20]], 16)
    with torch.no_grad():
        want_img = hf.get_image_features(pixel_values=image)
        want_txt = hf.get_text_features(input_ids=tokens)
    want_img = getattr(want_img, "pooler_output", want_img)  # transformers 5 returns an output object
    want_txt = getattr(want_txt, "pooler_output", want_txt)
    # the same weights as pytorch_model.bin (read with weights_only=True)
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    (bin_folder / "config.json").write_text((path / "config.json").read_text())
    torch.save(hf.state_dict(), bin_folder / "pytorch_model.bin")
    for folder in (path, bin_folder):
        clip = load_clip(folder)
        assert clip.config.vision_heads == 3 and clip.config.text_mlp == 37 and clip.context_length == 16
        with torch.no_grad():
            torch.testing.assert_close(clip.encode_image(image), want_img, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(clip.encode_text(tokens), want_txt, atol=1e-5, rtol=1e-5)
            logits, _ = clip(image, tokens)
        torch.testing.assert_close(clip.logit_scale, hf.logit_scale.detach())
        torch.testing.assert_close(logits[0, 1], clip.logit_scale.exp() * torch.cosine_similarity(
            want_img[0], want_txt[1], dim=0), atol=1e-4, rtol=1e-4)


def test_hf_folder_errors(hf_folder, tmp_path):
    path, _ = hf_folder
    config = (path / "config.json").read_text()
    (tmp_path / "config.json").write_text(config.replace('"model_type": "clip"', '"model_type": "siglip"'))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(NotACheckpoint, match="model_type 'siglip'"):
        load_clip(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(NotACheckpoint, match="model.safetensors or pytorch_model.bin"):
        load_clip(tmp_path)


@pytest.mark.parametrize("vision,keys", [("vit", VIT_KEYS), ("resnet", RESNET_KEYS)])
def test_openai_keys_strict_round_trip(vision, keys, tmp_path):
    torch.manual_seed(0)
    model = CLIP(tiny_clip_config(vision, vocab_size=64, context_length=12)).eval()
    sd = model.state_dict()
    assert set(keys + TEXT_KEYS) <= set(sd)
    size = model.config.image_size
    image = torch.randn(2, 3, *size)
    tokens = _tokens(64, [[3, 4], [5, 6, 7, 8]], 12)
    with torch.no_grad():
        want_img, want_txt = model.encode_image(image), model.encode_text(tokens)
    # OpenAI's archives also hold three scalars, tolerated by name
    scalars = {"input_resolution": torch.tensor(size[0]), "context_length": torch.tensor(12),
               "vocab_size": torch.tensor(64)}
    save_file({**sd, **scalars}, str(tmp_path / "openai.safetensors"))
    # open_clip's training checkpoints: {"epoch", "state_dict": {"module." + key}}
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "open_clip.pt")
    for name in ("openai.safetensors", "open_clip.pt"):
        clip = load_clip(tmp_path / name, head_width=16)
        for field in ("image_size", "vision_layers", "vision_width", "vision_heads", "text_heads", "embed_dim"):
            assert getattr(clip.config, field) == getattr(model.config, field), field
        with torch.no_grad():
            torch.testing.assert_close(clip.encode_image(image), want_img)
            torch.testing.assert_close(clip.encode_text(tokens), want_txt)
    # a missing tensor is named; shapes of another variant are refused
    with pytest.raises(CheckpointMismatch, match=keys[-2]):
        build_clip({k: v for k, v in sd.items() if k != keys[-2]}, head_width=16)
    with pytest.raises(ValueError, match="head_width"):
        build_clip(sd)  # heads = width / 64 = 0 for these 32-wide towers: told to pass head_width


def test_not_clip_checkpoints(tmp_path):
    swin_like = {"patch_embed.proj.weight": torch.zeros(4, 3, 4, 4), "layers.0.blocks.0.norm1.weight": torch.ones(4)}
    save_file(swin_like, str(tmp_path / "swin.safetensors"))
    with pytest.raises(NotACheckpoint, match="not a CLIP checkpoint.*patch_embed.proj.weight"):
        load_clip(tmp_path / "swin.safetensors")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(NotACheckpoint):
        load_clip(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_clip(tmp_path / "absent.pt")


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_torchscript_archive_read_without_running_code(tmp_path):
    torch.manual_seed(0)
    model = CLIP(tiny_clip_config("vit", vocab_size=64, context_length=12)).eval()
    image, tokens = torch.randn(1, 3, 32, 32), _tokens(64, [[3, 4]], 12)
    traced = torch.jit.trace(model, (image, tokens), check_trace=False)  # what OpenAI released: a traced CLIP
    traced.save(str(tmp_path / "ViT-tiny.pt"))
    sd = read_torchscript_state_dict(tmp_path / "ViT-tiny.pt")
    assert sd.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(sd[key], value), key
    clip = load_clip(tmp_path / "ViT-tiny.pt", head_width=16)
    with torch.no_grad():
        torch.testing.assert_close(clip(image, tokens)[0], model(image, tokens)[0])

    # An archive whose pickle would run a command is refused before anything runs.
    class Evil:
        def __reduce__(self):
            return (exec, ("open('PWNED', 'w').write('x')",))

    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as z:
        z.writestr("evil/code/__torch__.py", "")
        z.writestr("evil/data.pkl", pickle.dumps(Evil(), protocol=2))
    with pytest.raises(NotACheckpoint, match="exec, which the safe reader does not allow"):
        load_clip(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED").exists()


def test_resize_pos_embed():
    pos = torch.randn(1 + 14 * 14, 8)
    assert torch.equal(resize_pos_embed(pos, (14, 14), (14, 14)), pos)  # same grid: the identity
    out = resize_pos_embed(pos, (14, 14), (18, 9))
    assert out.shape == (1 + 18 * 9, 8) and torch.equal(out[0], pos[0])  # class token kept
    const = torch.cat([torch.zeros(1, 4), torch.full((14 * 14, 4), 0.5)])
    torch.testing.assert_close(resize_pos_embed(const, (14, 14), (18, 9))[1:], torch.full((18 * 9, 4), 0.5))
    # bicubic on the grid: each row of an (h, w) ramp stays a ramp, up to the interpolation's smooth edges
    ramp = torch.cat([torch.zeros(1, 1), torch.arange(4.0).repeat_interleave(4)[:, None]])  # value = row index
    rows = resize_pos_embed(ramp, (4, 4), (8, 2))[1:].view(8, 2)
    assert torch.equal(rows[:, 0], rows[:, 1]) and (rows[1:, 0] >= rows[:-1, 0]).all()


@pytest.mark.parametrize("vision", ["vit", "resnet"])
def test_person_crop_size(vision, tmp_path):
    torch.manual_seed(0)
    model = CLIP(tiny_clip_config(vision, vocab_size=64, context_length=12))
    sd = model.state_dict()
    crop = (48, 24) if vision == "vit" else (96, 48)  # ViT: 6x3 patches of 8; ResNet: a 3x1 pool grid
    clip = build_clip(sd, image_size=crop, head_width=16)
    key = "visual.positional_embedding" if vision == "vit" else "visual.attnpool.positional_embedding"
    grid = (6, 3) if vision == "vit" else (3, 1)
    assert clip.state_dict()[key].shape == (1 + grid[0] * grid[1], sd[key].shape[1])
    assert torch.equal(clip.state_dict()[key][0], sd[key][0])
    out = clip.visual(torch.randn(2, 3, *crop), return_all=True)
    width = 32 if vision == "vit" else 256
    assert out["proj"].shape == (2, 16) and out["pre"].shape == (2, width)
    assert out["tokens"].shape == ((2, 1 + 18, 32) if vision == "vit" else (2, 3, 256))
    with pytest.raises(ValueError, match="image_size"):
        clip.encode_image(torch.randn(1, 3, 32, 64))
    # a checkpoint fine-tuned at the crop size (non-square grid) reloads given its size, and only then
    save_file(clip.state_dict(), str(tmp_path / "crop.safetensors"))
    again = load_clip(tmp_path / "crop.safetensors", image_size=crop, head_width=16)
    assert torch.equal(again.state_dict()[key], clip.state_dict()[key])
    if vision == "vit":
        with pytest.raises(NotACheckpoint, match="pass the image_size"):
            load_clip(tmp_path / "crop.safetensors", head_width=16)


def test_vit_return_all_and_overlapping_patches():
    torch.manual_seed(0)
    model = CLIP(tiny_clip_config("vit", vocab_size=64, context_length=12)).eval()
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model.visual(image, return_all=True)
        torch.testing.assert_close(out["proj"], model.encode_image(image))
        torch.testing.assert_close(out["pre"] @ model.visual.proj, out["proj"])
        torch.testing.assert_close(out["tokens"][:, 0], out["pre"])
    overlap = build_clip(model.state_dict(), stride_size=4, head_width=16)  # 7x7 overlapping 8x8 patches
    assert overlap.visual.grid == (7, 7) and overlap.encode_image(image).shape == (2, 16)


def test_text_tower_prompts_and_causality():
    torch.manual_seed(0)
    model = CLIP(tiny_clip_config("vit", vocab_size=64, context_length=12)).eval()
    tokens = _tokens(64, [[3, 4, 5], [6, 7, 8, 9, 10]], 12)
    with torch.no_grad():
        feats = model.encode_text(tokens)
        eot = tokens.argmax(dim=-1)
        torch.testing.assert_close(model.encode_text_embeddings(model.token_embedding(tokens), eot), feats)
        # causal mask: what follows the EOT does not change the feature; what precedes it does
        after = tokens.clone()
        after[0, 6:] = 17
        torch.testing.assert_close(model.encode_text(after)[0], feats[0])
        before = tokens.clone()
        before[0, 1] = 17
        assert not torch.allclose(model.encode_text(before)[0], feats[0])


@pytest.mark.parametrize("vision", ["vit", "resnet"])
def test_every_parameter_gets_a_gradient(vision):
    torch.manual_seed(0)
    model = CLIP(tiny_clip_config(vision, vocab_size=64, context_length=12)).train()
    image = torch.randn(2, 3, *model.config.image_size)
    tokens = _tokens(64, [[3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [13, 14, 15, 16, 17, 18, 19, 20, 21, 22]], 12)
    logits, _ = model(image, tokens)
    torch.nn.functional.cross_entropy(logits, torch.arange(2)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("config,total,visual", [
    (ClipConfig(), 149_620_737, 86_192_640),  # ViT-B/16
    (ClipConfig(patch_size=32), 151_277_313, None),  # ViT-B/32
    (ClipConfig(embed_dim=1024, vision_layers=(3, 4, 6, 3), vision_width=64, vision_heads=32), 102_007_137, None),
])
def test_published_parameter_counts(config, total, visual):
    # OpenAI's CLIP notebook prints these counts (parameters only, BatchNorm statistics excluded).
    with torch.device("meta"):
        model = CLIP(config)
    assert sum(p.numel() for p in model.parameters()) == total
    if visual is not None:
        assert sum(p.numel() for p in model.visual.parameters()) == visual
