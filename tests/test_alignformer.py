"""AlignFormer: builders, gradients, deformable attention vs a slow reference, VLBA masking, the contrastive
loss and state-dict round trips. Real backbone and text classes, tiny configs."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import VOCAB, toy_batch

from vlalign.models.alignformer import ALIGNFORMER_BUILDERS, build_alignformer
from vlalign.models.alignformer.half_plane import half_plane_sums
from vlalign.models.alignformer.losses import bce_loss, contrast_regions, instance_contrastive_loss
from vlalign.models.alignformer.ms_deform_attn import (
    MSDeformAttn,
    ms_deform_attn_sample,
    ms_deform_attn_sample_bag,
)
from vlalign.models.alignformer.vlba import VLBA, TanhGate

transformers = pytest.importorskip("transformers")

SIZE = 64
TINY_SWIN = {"backbone": "swin", "backbone_kwargs": {"embed_dim": 32, "depths": [1, 1, 1, 1],
                                                     "num_heads": [1, 2, 4, 8], "window_size": 4,
                                                     "drop_path_rate": 0.0}}
TINY_DECODER = {"input_size": SIZE, "pixel_dim": 32, "pixel_layers": 2, "pixel_heads": 4, "pixel_ffn_dim": 32,
                "word_ffn_dim": 32, "query_dim": 32, "query_layers": 2, "query_heads": 4, "query_ffn_dim": 32,
                "mask_dim": 16, "pretrained_backbone": False, "pretrained_text": False}
# Lite keeps its real EfficientNet-Lite0 (random weights, 3.4M parameters: fast enough at 64x64).
TINY = {"alignformer_swin_b": TINY_SWIN, "alignformer_swin_t": TINY_SWIN, "alignformer_lite": {}}


def tiny(name, bert_dir, seed=0, **extra):
    torch.manual_seed(seed)
    return build_alignformer(name, text_dir=bert_dir, **TINY_DECODER, **TINY[name], **extra)


# ------------------------------------------------------------------------------------------------- builders
@pytest.mark.parametrize("name", list(ALIGNFORMER_BUILDERS))
def test_every_builder_runs_a_tiny_forward(name, bert_dir):
    model = tiny(name, bert_dir)
    image, tokens, mask, target = toy_batch(model)
    assert mask[1].sum() < mask.shape[1] or mask[0].sum() < mask.shape[1]  # the batch holds padding
    out = model(image, tokens, mask, target)
    assert out["logits"].shape == (2, SIZE, SIZE)
    assert len(out["aux_logits"]) == model.config.query_layers
    assert all(a.shape == (2, SIZE, SIZE) for a in out["aux_logits"])
    for key in ("logits", "loss_bce", "loss_contrast"):
        assert torch.isfinite(out[key]).all(), key
    expected = sum(F.binary_cross_entropy_with_logits(lg, target, pos_weight=torch.tensor(1.1))
                   for lg in [*out["aux_logits"], out["logits"]])
    assert torch.allclose(out["loss_bce"], expected)

    model.eval()
    with torch.no_grad():  # inference: no losses, and the embedding_bag sampling path gives the same logits
        plain = model(image, tokens, mask)
    assert set(plain) == {"logits", "aux_logits"}
    with torch.enable_grad():
        image.requires_grad_(True)  # forces the grid_sample path
        graded = model(image, tokens, mask)["logits"]
    torch.testing.assert_close(plain["logits"], graded.detach(), atol=1e-4, rtol=1e-4)


def test_builders_need_a_text_dir_for_bert_base_and_refuse_unknown_options(bert_dir):
    with pytest.raises(ValueError, match="text_dir"):
        build_alignformer("alignformer_swin_t", **TINY_DECODER, **TINY_SWIN)
    with pytest.raises(TypeError, match="unknown AlignFormer option"):
        tiny("alignformer_swin_t", bert_dir, pixel_depth=3)
    with pytest.raises(ValueError, match="unknown AlignFormer"):
        build_alignformer("alignformer_swin_xl")


def test_paper_scale_builders_on_meta(tmp_path):
    """Full-size Swin-B/T + BERT-base shapes without allocating: the paper's numbers are where they belong."""
    transformers.BertConfig().save_pretrained(tmp_path)  # bert-base-uncased's shape: 768-d, 12 layers
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    sizes = {}
    for name in ("alignformer_swin_b", "alignformer_swin_t"):
        with torch.device("meta"):
            model = build_alignformer(name, text_dir=str(tmp_path), pretrained_text=False)
        cfg = model.config
        assert (cfg.input_size, cfg.max_tokens, cfg.pixel_layers, cfg.query_layers) == (480, 20, 6, 6)
        assert model.backbone.window_size == 12
        assert len(model.pixel_decoder.layers) == 6 and model.pixel_decoder.layers[0].attn.num_heads == 8
        assert model.query_decoder.kernel_head[-1].out_features == 257  # 256-d kernel + bias
        assert model.vlba[3].vis_gate is None and model.vlba[0].vis_gate is not None
        sizes[name] = sum(p.numel() for p in model.parameters())
        widths = (128, 256, 512, 1024) if name.endswith("_b") else (96, 192, 384, 768)
        assert model.backbone.out_channels == widths
    # the release (Swin-B + BERT-base, 480) has 273 M parameters; ours adds the query self-attention (14 M)
    # and the contrastive projection
    assert 270e6 < sizes["alignformer_swin_b"] < 295e6, sizes
    assert sizes["alignformer_swin_t"] < sizes["alignformer_swin_b"] - 50e6


# ------------------------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("name", ["alignformer_swin_b", "alignformer_lite"])
def test_every_parameter_gets_a_gradient_once_the_gates_open(name, bert_dir):
    """The VLBA gates start shut (output exactly 0), so at the first step neither the gates' first layers nor
    the language branches of the gated stages (whose only consumer is the gated word update) see a gradient.
    One AdamW step moves the gates' zero-initialised last layers; from the second step on, every
    parameter receives a non-zero gradient from the BCE + contrastive losses."""
    model = tiny(name, bert_dir)
    image, tokens, mask, target = toy_batch(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    out = model(image, tokens, mask, target)
    (out["loss_bce"] + out["loss_contrast"]).backward()
    silent = {n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}
    assert silent and all(n.startswith("vlba.") for n in silent), silent  # only what the shut gates hide
    assert "vlba.0.vis_gate.net.0.weight" in silent and "vlba.0.vis_gate.net.2.weight" not in silent
    opt.step()
    opt.zero_grad(set_to_none=True)
    out = model(image, tokens, mask, target)
    (out["loss_bce"] + out["loss_contrast"]).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_frozen_text_encoder_gets_no_gradient_and_no_optimizer_group(bert_dir):
    model = tiny("alignformer_lite", bert_dir, freeze_text=True)
    image, tokens, mask, target = toy_batch(model)
    before = {n: p.clone() for n, p in model.text_encoder.named_parameters()}
    out = model(image, tokens, mask, target)
    (out["loss_bce"] + out["loss_contrast"]).backward()
    assert all(p.grad is None and not p.requires_grad for p in model.text_encoder.parameters())
    assert model.query_decoder.center_proj.weight.grad is not None  # the rest still learns
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2).step()
    assert all(torch.equal(before[n], p) for n, p in model.text_encoder.named_parameters())


def test_attention_prior_puts_ones_where_each_head_looked_and_the_kernel_reads_it(bert_dir):
    """query_attn_prior: per-head attention maps, scaled to max 1, upsampled to stride 4; the kernel head gets
    one weight per head, and those weights change the mask only through the maps."""
    from vlalign.models.alignformer.query_decoder import QueryDecoder

    weights = torch.zeros(1, 2, 1, 4 * 4)
    weights[0, 0, 0, 5] = 0.5  # head 0 looks at cell (1, 1) of a 4x4 map, head 1 at cell (3, 0)
    weights[0, 1, 0, 12] = 0.25
    same = QueryDecoder.attention_maps(weights, (4, 4), (4, 4))
    expected = torch.zeros(1, 2, 4, 4)
    expected[0, 0, 1, 1] = expected[0, 1, 3, 0] = 1.0
    assert torch.equal(same, expected)  # scaled to 1 at the attention's own resolution
    maps = QueryDecoder.attention_maps(weights, (4, 4), (8, 8))
    assert maps.shape == (1, 2, 8, 8)
    assert maps[0, 0].argmax() // 8 in (2, 3) and maps[0, 0].argmax() % 8 in (2, 3)
    assert maps[0, 0, 6:, :2].max() == 0 and maps[0, 1, 7, 0] == 1.0 and maps[0, 1, :4, 4:].max() == 0

    model = tiny("alignformer_lite", bert_dir, query_attn_prior=True).eval()  # no drop-path: forwards compare
    heads, mask_dim = model.config.query_heads, model.config.mask_dim
    assert model.query_decoder.kernel_head[-1].out_features == mask_dim + heads + 1
    image, tokens, mask, target = toy_batch(model)
    out = model(image, tokens, mask, target)
    (out["loss_bce"] + out["loss_contrast"]).backward()
    prior_rows = model.query_decoder.kernel_head[-1].weight.grad[mask_dim : mask_dim + heads]
    assert (prior_rows.abs().sum(1) > 0).all()  # every head's map reaches the loss
    with torch.no_grad():
        model.query_decoder.kernel_head[-1].bias[mask_dim : mask_dim + heads] += 5.0
        shifted = model(image, tokens, mask)
    # the input state reads zeros (no-grad sampling differs from the autograd path by float rounding only)
    torch.testing.assert_close(shifted["aux_logits"][0], out["aux_logits"][0].detach(), atol=1e-4, rtol=1e-4)
    assert (shifted["logits"] - out["logits"].detach()).abs().max() > 1e-2


def test_global_pixel_attention_and_value_positions_learn_and_change_the_output(bert_dir):
    """pixel_global_attn adds one self-attention layer per deformable layer, all trained; query_value_pos adds
    no parameter (same seed, same weights) but changes what the query reads."""
    plain = tiny("alignformer_lite", bert_dir).eval()
    image, tokens, mask, target = toy_batch(plain)
    model = tiny("alignformer_lite", bert_dir, pixel_global_attn=True).eval()
    assert len(model.pixel_decoder.global_layers) == model.config.pixel_layers
    out = model(image, tokens, mask, target)
    (out["loss_bce"] + out["loss_dice"]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.pixel_decoder.global_layers.parameters())

    moved = tiny("alignformer_lite", bert_dir, query_value_pos=True).eval()
    assert moved.state_dict().keys() == plain.state_dict().keys()
    with torch.no_grad():
        a, b = plain(image, tokens, mask)["logits"], moved(image, tokens, mask)["logits"]
    assert (a - b).abs().max() > 1e-3


def test_half_plane_sums_match_a_pixel_loop():
    """Each of the 8 sums is the mass strictly beyond the pixel along x, y, x+y or x-y (both senses)."""
    g = torch.rand(2, 3, 5, 7)
    fast = half_plane_sums(g)
    ys, xs = torch.meshgrid(torch.arange(5), torch.arange(7), indexing="ij")
    for a, proj in enumerate((xs, ys, xs + ys, xs - ys)):
        for y in range(5):
            for x in range(7):
                beyond, before = proj > proj[y, x], proj < proj[y, x]
                torch.testing.assert_close(fast[:, :, 2 * a, y, x], (g * beyond).sum((-2, -1)))
                torch.testing.assert_close(fast[:, :, 2 * a + 1, y, x], (g * before).sum((-2, -1)))
    # one unit of mass at the left edge: every pixel right of its column sees it on its left, none on its right
    point = torch.zeros(1, 1, 4, 4)
    point[0, 0, 1, 0] = 1.0
    sums = half_plane_sums(point)[0, 0]
    assert sums[1, :, 0].eq(0).all() and sums[1, :, 1:].eq(1).all() and sums[0].eq(0).all()


def test_half_plane_context_starts_as_identity_and_learns(bert_dir):
    """pixel_half_plane adds one context per layer and level, the identity at initialisation; once its output
    layer is non-zero every one of its parameters gets a gradient."""
    model = tiny("alignformer_lite", bert_dir, pixel_half_plane=4).eval()
    contexts = [c for level in model.pixel_decoder.half_plane for c in level]
    assert len(contexts) == 3 * model.config.pixel_layers
    x = torch.randn(2, model.config.pixel_dim, 6, 5)
    torch.testing.assert_close(contexts[0](x), x)  # identity at initialisation
    image, tokens, mask, target = toy_batch(model)
    with torch.no_grad():
        for c in contexts:
            c.out.weight.normal_(std=0.1)
    out = model(image, tokens, mask, target)
    (out["loss_bce"] + out["loss_dice"]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for c in contexts for p in c.parameters())
    with pytest.raises(ValueError, match="pixel_half_plane"):
        tiny("alignformer_lite", bert_dir, pixel_half_plane=-1)


def test_release_gates_never_open():
    """zero_init="all" (the release) leaves both gate weights without gradient forever; ours opens."""
    x = torch.randn(5, 8)
    for zero_init, opens in (("all", False), ("output", True)):
        torch.manual_seed(0)
        gate = TanhGate(8, zero_init)
        assert gate(x).abs().max() == 0  # shut at initialisation either way
        (gate(x) * torch.randn(5, 8)).sum().backward()
        assert bool(gate.net[2].weight.grad.abs().sum() > 0) == opens
        assert gate.net[0].weight.grad.abs().sum() == 0  # the second layer is still zero at step one


# ----------------------------------------------------------------------------------- deformable attention
def slow_bilinear(image, x, y):
    """Explicit zero-padded bilinear sample of a (C, H, W) map at pixel coordinates (x, y) (centres at .0)."""
    _, h, w = image.shape
    x0, y0 = int(torch.floor(x)), int(torch.floor(y))
    out = image.new_zeros(image.shape[0])
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out = out + image[:, yy, xx] * wx * wy
    return out


def slow_ms_deform_attn(value, shapes, locations, weights):
    """Loops over batch, queries, heads, levels and points: the definition, nothing fused."""
    b, _, heads, dh = value.shape
    _, q, _, levels, points, _ = locations.shape
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = value.new_zeros(b, q, heads, dh)
    for bi in range(b):
        for qi in range(q):
            for hi in range(heads):
                acc = value.new_zeros(dh)
                for li, (h, w) in enumerate(shapes):
                    level = value[bi, starts[li]:starts[li + 1], hi].T.reshape(dh, h, w)
                    for pi in range(points):
                        x, y = locations[bi, qi, hi, li, pi]
                        sample = slow_bilinear(level, x * w - 0.5, y * h - 0.5)
                        acc = acc + weights[bi, qi, hi, li, pi] * sample
                out[bi, qi, hi] = acc
    return out.reshape(b, q, heads * dh)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_deformable_sampling_matches_the_slow_reference(dtype, tol):
    torch.manual_seed(0)
    shapes = ((5, 7), (3, 4), (2, 2))
    s = sum(h * w for h, w in shapes)
    value = torch.randn(2, s, 2, 3, dtype=dtype, requires_grad=True)
    # positions inside, near the border and far outside every level
    locations = (torch.rand(2, 4, 2, 3, 2, 2, dtype=dtype) * 1.8 - 0.4).requires_grad_(True)
    weights = torch.rand(2, 4, 2, 3, 2, dtype=dtype, requires_grad=True)
    ref = slow_ms_deform_attn(value, shapes, locations, weights)
    fused = ms_deform_attn_sample(value, shapes, locations, weights)  # autograd on: grid_sample path
    torch.testing.assert_close(fused, ref, atol=tol, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(ms_deform_attn_sample_bag(value, shapes, locations, weights), ref.detach(),
                                   atol=tol, rtol=0)
    grads_ref = torch.autograd.grad(ref.square().sum(), (value, locations, weights))
    grads = torch.autograd.grad(fused.square().sum(), (value, locations, weights))
    for g, r in zip(grads, grads_ref):
        torch.testing.assert_close(g, r, atol=100 * tol, rtol=0)


def test_deformable_attention_module_samples_what_it_predicts():
    torch.manual_seed(0)
    shapes = ((4, 4), (2, 2), (1, 1))
    attn = MSDeformAttn(dim=8, num_levels=3, num_heads=2, num_points=2)
    torch.nn.init.normal_(attn.sampling_offsets.weight, std=0.5)
    torch.nn.init.normal_(attn.attention_weights.weight)
    query, value = torch.randn(1, 5, 8), torch.randn(1, 21, 8)
    refs = torch.rand(1, 5, 2)
    out = attn(query, refs, value, shapes)
    offsets = attn.sampling_offsets(query).view(1, 5, 2, 3, 2, 2)
    size = torch.tensor([[4.0, 4.0], [2.0, 2.0], [1.0, 1.0]])
    locations = refs[:, :, None, None, None] + offsets / size[:, None]
    weights = attn.attention_weights(query).view(1, 5, 2, 6).softmax(-1).view(1, 5, 2, 3, 2)
    expected = attn.output_proj(slow_ms_deform_attn(attn.value_proj(value).view(1, 21, 2, 4), shapes,
                                                    locations, weights))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


# -------------------------------------------------------------------------------------------------- VLBA
def test_vlba_ignores_padded_words_and_starts_as_identity():
    torch.manual_seed(0)
    vlba = VLBA(vis_dim=16, lang_dim=12, num_heads=2)
    x, words = torch.randn(2, 16, 5, 6), torch.randn(2, 7, 12)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, 4:] = False
    mask[1, 6:] = False
    out = vlba(x, words, mask)
    # zero-initialised gates: both residual paths are shut, the stage continues unchanged
    torch.testing.assert_close(out.x, x)
    torch.testing.assert_close(out.words, words * mask[..., None])
    assert out.vis_res.abs().sum() > 0 and out.lang_res[mask].abs().sum() > 0

    for gate in (vlba.vis_gate, vlba.lang_gate):  # open the gates so the check covers the gated outputs too
        torch.nn.init.normal_(gate.net[2].weight, std=0.3)
    out = vlba(x, words, mask)
    assert not torch.allclose(out.x, x)
    other = words.clone()
    other[~mask] = torch.randn(int((~mask).sum()), 12) * 100
    out2 = vlba(x, other, mask)
    for a, b in zip(out, out2):
        torch.testing.assert_close(a, b)
    assert out.lang_res[~mask].abs().max() == 0 and out.words[~mask].abs().max() == 0


# ------------------------------------------------------------------------------------------ contrastive loss
def square_target(b=2, size=32):
    target = torch.zeros(b, size, size)
    target[:, 8:24, 8:24] = 1  # an 4x4-pixel square at stride 4 (8x8 map)
    return target


def test_regions_erode_and_dilate_the_downsampled_mask():
    pos, neg = contrast_regions(square_target(1), (8, 8), erode=1, dilate=1)
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[3:5, 3:5] = True  # the 4x4 square [2:6] eroded by one pixel
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[1:7, 1:7] = False  # the square dilated by one pixel
    assert torch.equal(pos[0], inside) and torch.equal(neg[0], outside)


def test_contrast_prefers_aligned_pixels():
    torch.manual_seed(0)
    target = square_target()
    pos, neg = contrast_regions(target, (8, 8))
    center = torch.randn(2, 6)
    direction = F.normalize(center, dim=-1)[:, :, None, None]
    noise = 0.1 * torch.randn(2, 6, 8, 8)
    inside = pos[:, None].float() - neg[:, None].float()  # +1 on positives, -1 on negatives
    aligned = instance_contrastive_loss(direction * inside + noise, center, target, 0.07)
    anti = instance_contrastive_loss(-direction * inside + noise, center, target, 0.07)
    assert aligned["contrast_pixel"] < 0.01 < anti["contrast_pixel"]
    assert aligned["contrast_instance"] < anti["contrast_instance"]


def test_contrast_ignores_the_ambiguous_band():
    torch.manual_seed(0)
    target = square_target()
    pos, neg = contrast_regions(target, (8, 8))
    band = ~(pos | neg)
    assert pos.any() and neg.any() and band.any()
    pixels, center = torch.randn(2, 6, 8, 8), torch.randn(2, 6)
    base = instance_contrastive_loss(pixels, center, target, 0.1)
    changed = pixels.clone()
    changed[band[:, None].expand_as(changed)] = 50 * torch.randn(int(band.sum()) * 6)
    other = instance_contrastive_loss(changed, center, target, 0.1)
    for key in base:
        torch.testing.assert_close(base[key], other[key])
    changed[pos[:, None].expand_as(changed)] += 1.0  # a positive pixel does count
    assert not torch.allclose(instance_contrastive_loss(changed, center, target, 0.1)["contrast_pixel"],
                              base["contrast_pixel"])


@pytest.mark.parametrize("empty", [[0], [0, 1]])
def test_contrast_handles_empty_masks(empty):
    target = square_target()
    target[empty] = 0
    pixels = torch.randn(2, 6, 8, 8, requires_grad=True)
    center = torch.randn(2, 6, requires_grad=True)
    loss = instance_contrastive_loss(pixels, center, target, 0.07)
    total = loss["contrast_pixel"] + loss["contrast_instance"]
    assert torch.isfinite(total)
    total.backward()
    assert torch.isfinite(pixels.grad).all() and torch.isfinite(center.grad).all()
    if len(empty) == 2:
        assert total == 0 and pixels.grad.abs().max() == 0
    else:  # one sample left: its pixel term counts, the instance term has no negatives
        assert loss["contrast_pixel"] > 0 and loss["contrast_instance"] == 0
        assert pixels.grad[0].abs().max() == 0 and pixels.grad[1].abs().max() > 0


def test_bce_sums_deep_supervision():
    logits = [torch.randn(2, 4, 4) for _ in range(3)]
    target = (torch.rand(2, 4, 4) > 0.5).float()
    each = [F.binary_cross_entropy_with_logits(lg, target, pos_weight=torch.tensor(1.1)) for lg in logits]
    torch.testing.assert_close(bce_loss(logits, target), sum(each))


# ------------------------------------------------------------------------------------------- serialisation
def test_state_dict_round_trip_gives_identical_outputs(bert_dir):
    model = tiny("alignformer_swin_b", bert_dir, seed=0).eval()
    image, tokens, mask, _ = toy_batch(model)
    with torch.no_grad():
        expected = model(image, tokens, mask)["logits"]
    clone = tiny("alignformer_swin_b", bert_dir, seed=1).eval()
    with torch.no_grad():
        assert not torch.allclose(clone(image, tokens, mask)["logits"], expected)
        clone.load_state_dict(model.state_dict(), strict=True)
        torch.testing.assert_close(clone(image, tokens, mask)["logits"], expected, atol=0, rtol=0)



def test_save_pretrained_folder_round_trip(bert_dir, tmp_path):
    """config.json + model.safetensors + text/ rebuild the same model through its builder."""
    from vlalign.models.pretrained import from_pretrained, save_pretrained

    model = tiny("alignformer_swin_b", bert_dir, seed=0).eval()
    image, tokens, mask, _ = toy_batch(model)
    with torch.no_grad():
        expected = model(image, tokens, mask)["logits"]
    json.dumps(dataclasses.asdict(model.config))  # the config is what checkpoints store
    loaded = from_pretrained(save_pretrained(model, tmp_path / "af"))
    assert loaded.config == dataclasses.replace(model.config, text_dir=str(tmp_path / "af" / "text"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(image, tokens, mask)["logits"], expected, atol=0, rtol=0)


def test_backbone_wiring_and_bf16_autocast_run(bert_dir):
    """decoder_features="backbone" (the gated path) gates every stage; a zero contrastive weight skips that
    loss; bf16 autocast keeps the pixel decoder in float32 and gives logits close to float32's."""
    model = tiny("alignformer_swin_b", bert_dir, decoder_features="backbone", contrast_weight=0.0).eval()
    assert all(v.vis_gate is not None for v in model.vlba)
    image, tokens, mask, target = toy_batch(model)
    with torch.no_grad():
        out = model(image, tokens, mask, target)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(image, tokens, mask)["logits"].float()
    assert out["logits"].shape == (2, SIZE, SIZE) and torch.isfinite(out["loss_bce"])
    assert "loss_contrast" not in out
    assert (low - out["logits"]).abs().mean() < 0.1 * out["logits"].abs().mean()
