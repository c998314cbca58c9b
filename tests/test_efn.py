"""EFN: builders (tiny configs), gradients, the fusion and BEM blocks against hand-computed cases, the loss
targets, the vocabulary (built from training expressions, GloVe, saved with the model), model folders and
end-to-end training through the CLI on a tiny refer-format dataset."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import toy_batch
from refer_fixtures import write_refer_dataset

from vlalign import assets
from vlalign.cli import main
from vlalign.data.refer import ReferDataset
from vlalign.models.efn import EFN_BUILDERS, training_expressions
from vlalign.models.efn.bem import BEM
from vlalign.models.efn.fusion import CoAttention, WordPixelAttention, coord_maps
from vlalign.models.efn.losses import boundary_band
from vlalign.models.efn.text import PAD, UNK, build_vocab, split_words
from vlalign.models.pretrained import build_model, from_pretrained, save_pretrained

SIZE = 64
VOCAB = [PAD, UNK, "the", "man", "on", "left", "a", "big", "white", "dog", "red", "circle"]
TINY_RESNET = {"backbone": "resnet", "backbone_kwargs": {"depths": [1, 1, 1, 1], "planes": [4, 8, 16, 32],
                                                         "stem_channels": 8}}
TINY = {"input_size": SIZE, "embed_dim": 16, "word_dim": 16, "gru_dim": 8, "fusion_dim": 16, "coattn_dim": 8,
        "decoder_dims": [16, 16, 8, 8], "pretrained_backbone": False, "pretrained_text": False}
# Lite keeps its real EfficientNet-Lite0 (random weights here: 3.4M parameters, fast enough at 64x64), without
# stochastic depth: a dropped block would get no gradient in the step that drops it.
PER_BUILDER = {"efn_resnet101": TINY_RESNET, "efn_lite": {"backbone_kwargs": {"drop_path_rate": 0.0}},
               "efn_wrn101": {**TINY_RESNET, "backbone_kwargs": {**TINY_RESNET["backbone_kwargs"],
                                                                 "width_per_group": 128}}}
LOSSES = {f"loss_{kind}{k}" for kind in ("mask", "body", "edge") for k in range(1, 5)}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(name="efn_lite", seed=0, **extra):
    torch.manual_seed(seed)
    return build_model(name, **{**TINY, "vocab": VOCAB, **PER_BUILDER[name], **extra})


def silent_parameters(model):
    return {n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}


def train_steps(model, steps=2):
    """Silent parameters after each of `steps` AdamW steps on the sum of the losses."""
    image, tokens, mask, target = toy_batch(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    silent = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        out = model(image, tokens, mask, target)
        sum(v for k, v in out.items() if k.startswith("loss_")).backward()
        silent.append(silent_parameters(model))
        opt.step()
    return out, silent


# ------------------------------------------------------------------------------------------------- builders
@pytest.mark.parametrize("name", list(EFN_BUILDERS))
def test_every_builder_trains_and_every_parameter_gets_a_gradient(name):
    """The BEM warps start as the identity with a zero last layer (release), so at the first step the layers
    that regress the warp see no gradient; after one step every parameter gets a non-zero gradient."""
    model = tiny(name)
    image, tokens, mask, target = toy_batch(model)
    assert not mask.all()  # the batch holds padding
    out, silent = train_steps(model)
    dice = {"loss_dice"} if model.config.dice_weight else set()  # efn_lite adds Dice (ours)
    assert set(out) == {"logits"} | LOSSES | dice and out["logits"].shape == (2, SIZE, SIZE)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert silent[0] and all(".bem.down." in n or ".bem.flow." in n or ".bem.theta.0." in n for n in silent[0])
    assert not silent[1], silent[1]

    model.eval()
    with torch.no_grad():
        plain = model(image, tokens, mask)
        alone = model(image[1:], *(t[1:, : int(mask[1].sum())] for t in (tokens, mask)))
    assert set(plain) == {"logits"} and plain["logits"].shape == (2, SIZE, SIZE)
    # neither the other sentence of the batch nor the padding changes a prediction
    torch.testing.assert_close(alone["logits"][0], plain["logits"][1], atol=1e-4, rtol=1e-4)


def test_without_bem_only_mask_terms_and_no_silent_parameter():
    out, silent = train_steps(tiny("efn_resnet101", bem=False), steps=1)
    assert set(out) == {"logits"} | {f"loss_mask{k}" for k in range(1, 5)}
    assert not silent[0]


def test_plain_residual_fusion_starts_as_the_identity_then_trains():
    """fusion_l2=False (ours): the fused encoder first computes exactly the backbone alone, so pretrained
    later stages see their own features; the fusion blocks get gradients from the second step on."""
    model = tiny("efn_resnet101", fusion_l2=False)
    image, tokens, mask, target = toy_batch(model)
    with torch.no_grad():
        fused = model.encode(image, tokens, mask.bool())
        alone = model.backbone(image)
    for a, b in zip(fused, alone):
        torch.testing.assert_close(a, b)
    out, silent = train_steps(model)
    assert silent[0] and all(n.startswith("fusion.") or n.startswith("language.") or n.startswith("text_encoder.")
                             or ".bem." in n for n in silent[0]), silent[0]
    assert not silent[1], silent[1]


def test_loss_weights_and_paper_scale_shapes():
    model = tiny("efn_resnet101")
    image, tokens, mask, target = toy_batch(model)
    torch.manual_seed(0)
    base = model(image, tokens, mask, target)
    model.config.edge_weight = 3.0
    torch.manual_seed(0)
    weighted = model(image, tokens, mask, target)
    torch.testing.assert_close(weighted["loss_edge2"], 3 * base["loss_edge2"])
    torch.testing.assert_close(weighted["loss_mask2"], base["loss_mask2"])
    with torch.device("meta"):
        paper = build_model("efn_wrn101", vocab=VOCAB)
    cfg = paper.config
    assert (cfg.input_size, cfg.max_tokens, cfg.fusion_dim, cfg.coattn_dim) == (320, 20, 512, 256)
    assert paper.backbone.out_channels == (256, 512, 1024, 2048) and paper.backbone.layer1[0].conv2.in_channels == 128
    assert [f.out[0].out_channels for f in paper.fusion] == [512, 1024, 2048]
    with pytest.raises(TypeError, match="unknown EFN option"):
        tiny("efn_lite", fusion_width=3)
    with pytest.raises(ValueError, match="embed_dim=50"):
        tiny("efn_lite", pretrained_text=True)


def test_bert_family_text_encoder(bert_dir, tmp_path):
    model = tiny("efn_lite", text_encoder="hf", text_dir=bert_dir, vocab=None)
    out, silent = train_steps(model)
    assert not silent[1] and torch.isfinite(out["loss_mask1"])
    assert model.param_groups()[0]["params"][0] is next(model.text_encoder.parameters())
    folder = save_pretrained(model, tmp_path / "model")
    assert (folder / "text" / "tokenizer_config.json").is_file()
    model.eval()
    image, tokens, mask, _ = toy_batch(model)
    with torch.no_grad():
        torch.testing.assert_close(from_pretrained(folder)(image, tokens, mask)["logits"],
                                   model(image, tokens, mask)["logits"])


# ---------------------------------------------------------------------------------------------- the blocks
def test_coordinate_maps_follow_width_and_height():
    maps = coord_maps(2, 2, 4)[0]  # H=2, W=4
    assert maps.shape == (8, 2, 4)
    torch.testing.assert_close(maps[0, 0], torch.tensor([-1.0, -0.5, 0.0, 0.5]))  # x0 along the width
    torch.testing.assert_close(maps[1, :, 0], torch.tensor([-1.0, 0.0]))  # y0 along the height
    torch.testing.assert_close(maps[4, 1], torch.tensor([-0.75, -0.25, 0.25, 0.75]))  # x centres
    assert torch.all(maps[6] == 0.5) and torch.all(maps[7] == 0.25)


def test_word_pixel_attention_ignores_padding():
    torch.manual_seed(0)
    attn = WordPixelAttention(8)
    words, m = torch.randn(1, 3, 8), torch.randn(1, 8, 4, 5)
    padded = torch.cat([words, 100 * torch.randn(1, 2, 8)], dim=1)
    mask = torch.tensor([[True, True, True, False, False]])
    torch.testing.assert_close(attn(padded, m, mask), attn(words, m, mask[:, :3]))
    one = attn(words[:, :1], m, mask[:, :1])  # one real word: every pixel gets exactly that word
    torch.testing.assert_close(one, words[0, 0].view(1, 8, 1, 1).expand_as(m))


def test_co_attention_weights_sum_to_one_over_the_summed_index():
    """With the output convs set to the identity, a constant map is returned unchanged by its branch."""
    torch.manual_seed(0)
    co = CoAttention(4, 3)
    with torch.no_grad():
        for conv in (co.out_visual, co.out_language):
            conv.weight.zero_()
            conv.weight[:, :, 1, 1] = torch.eye(4)
    varied, constant = torch.randn(1, 4, 3, 5), torch.randn(1, 4, 1, 1).expand(1, 4, 3, 5)
    m_new, _ = co(varied, constant)  # visual pixels gather the (constant) language map
    torch.testing.assert_close(m_new, constant)
    _, lmap_new = co(constant, varied)  # language pixels gather the (constant) visual map
    torch.testing.assert_close(lmap_new, constant)


def test_bem_starts_as_identity_and_learns_a_warp():
    torch.manual_seed(0)
    bem = BEM(4)
    x = torch.randn(2, 4, 8, 8)
    body, edge = bem(x)
    torch.testing.assert_close(body, x, atol=1e-5, rtol=0)
    assert edge.abs().max() < 1e-5
    with torch.no_grad():
        bem.theta[2].bias.copy_(torch.tensor([1.0, 0.0, 0.25, 0.0, 1.0, 0.0]))  # shift by one pixel in x
    body, edge = bem(x)
    torch.testing.assert_close(body[..., :-1], x[..., 1:], atol=1e-5, rtol=0)
    torch.testing.assert_close(edge, x - body)


def test_boundary_band_is_the_release_distance_band():
    """Pixels within 2 px (Euclidean) of the other class, the image border counting as background: checked
    against the release's definition with scipy's exact distance transform."""
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 20, 23), np.uint8)
    masks[0, 4:15, 6:18] = 1
    masks[1] = rng.random((20, 23)) > 0.7
    masks[2, :10, :] = 1  # touches the image border
    for mask, band in zip(masks, boundary_band(torch.from_numpy(masks).float(), radius=2).numpy()):
        padded = np.pad(mask, 1)
        dist = (ndimage.distance_transform_edt(padded) + ndimage.distance_transform_edt(1 - padded))[1:-1, 1:-1]
        np.testing.assert_array_equal(band, ((dist > 0) & (dist <= 2)).astype(np.float32))


# ------------------------------------------------------------------------------------------- the vocabulary
def test_vocabulary_and_tokenizer():
    assert split_words("The man's HAT, left-most!") == ["the", "man", "s", "hat", "left", "most"]
    assert build_vocab(["b a", "a c", "a b"]) == [PAD, UNK, "a", "b", "c"]
    assert build_vocab(["b a", "a c", "a b"], min_count=2) == [PAD, UNK, "a", "b"]
    model = tiny("efn_lite", max_tokens=4)
    tok = model.tokenize(["The zebra on the LEFT", "dog"])
    assert tok["tokens"].tolist() == [[2, 1, 4, 2], [9, 0, 0, 0]]  # cut at 4 words, unknown -> UNK
    assert tok["token_mask"].sum(1).tolist() == [4, 1]
    with pytest.raises(ValueError, match="sentence 1"):
        model.tokenize(["dog", "  "])
    with pytest.raises(ValueError, match="no words"):
        model.tokenize(["?!"])
    with pytest.raises(RuntimeError, match="prepare"):
        tiny("efn_lite", vocab=None).tokenize(["the dog"])


def test_prepare_builds_the_vocabulary_from_training_expressions(tmp_path):
    written = write_refer_dataset(tmp_path, num_images=8)
    train = ReferDataset(tmp_path, "train", mode="train")
    texts = training_expressions(train)
    assert sorted(texts) == sorted(written["sent_text"][s] for s in written["splits"]["train"]["sent_ids"])
    model = tiny("efn_lite", vocab=None)
    model.prepare(train)
    assert model.config.vocab == build_vocab(texts) and "number" in model.config.vocab
    assert model.text_encoder.embedding.num_embeddings == len(model.config.vocab)
    before = model.text_encoder.embedding.weight
    model.prepare(ReferDataset(tmp_path, "val", mode="train"))  # a vocabulary exists: nothing changes
    assert model.text_encoder.embedding.weight is before


def test_glove_initialisation():
    try:
        vectors, words = assets.glove_6b_50d()
    except assets.AssetMissing as e:
        pytest.skip(str(e))
    model = tiny("efn_lite", embed_dim=50, pretrained_text=True)
    pq = pytest.importorskip("pyarrow.parquet")
    row = pq.read_table(words).column(0).to_pylist().index("dog")
    expected = torch.from_numpy(np.load(vectors, mmap_mode="r")[row].copy())
    torch.testing.assert_close(model.text_encoder.embedding.weight[VOCAB.index("dog")].detach(), expected)
    assert model.text_encoder.embedding.weight[0].abs().sum() == 0  # padding


def test_model_folder_round_trip_keeps_the_vocabulary(tmp_path):
    model = tiny("efn_lite").eval()
    folder = save_pretrained(model, tmp_path / "model")
    assert json.loads((folder / "config.json").read_text())["config"]["vocab"] == VOCAB
    assert (folder / "text" / "vocab.txt").read_text().split() == VOCAB
    loaded = from_pretrained(folder)
    # from_pretrained points text_dir at the folder's text/ (where HF tokenizers live); the rest is equal
    assert dataclasses.replace(loaded.config, text_dir=None) == model.config
    image, tokens, mask, _ = toy_batch(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image, tokens, mask)["logits"], model(image, tokens, mask)["logits"])
    assert loaded.tokenize(["the big dog"])["tokens"].tolist() == [[2, 7, 9]]


# --------------------------------------------------------------------------------------------- end to end
def test_train_eval_predict_efn_lite_through_the_cli(tmp_path):
    written = write_refer_dataset(tmp_path / "data", num_images=8)
    run = tmp_path / "run"
    tiny_set = {k: v for k, v in TINY.items() if not k.startswith("pretrained")}
    tiny_set["embed_dim"] = 50  # the real GloVe initialisation when the asset is installed
    args = ["train", "efn_lite", "--data", str(tmp_path / "data"), "--out", str(run), "--batch-size", "2",
            "--save-every", "1", "--set", *(f"{k}={json.dumps(v)}" for k, v in tiny_set.items())]
    assert main(args + ["--iters", "2"]) == 0
    results = json.loads((run / "results.json").read_text())["results"]
    assert set(results) == {"val", "testA", "testB"}
    assert all(0 <= r["mIoU"] <= 1 and r["resolution"] == "original" for r in results.values())
    losses = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(LOSSES <= set(r) for r in losses)
    config = json.loads((run / "model" / "config.json").read_text())["config"]
    assert "number" in config["vocab"] and config["input_size"] == SIZE

    assert main(args + ["--iters", "3", "--resume"]) == 0  # the rebuilt vocabulary fits the checkpoint
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r.get("iteration", 0) for r in lines) == 3

    out_json = tmp_path / "eval.json"
    assert main(["eval", "--weights", str(run / "model"), "--data", str(tmp_path / "data"), "--split", "val",
                 "--json", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["val"]["num_samples"] == results["val"]["num_samples"]
    image = written["image_dir"] / next(iter(written["images"].values()))["file_name"]
    assert main(["predict", "--weights", str(run / "model"), str(image), "the red box", "--out",
                 str(tmp_path / "mask.png")]) == 0
    assert (tmp_path / "mask_overlay.png").is_file()


def test_dice_term_is_off_by_default_and_scores_a_perfect_mask_near_zero():
    from vlalign.models.efn.losses import efn_losses

    target = torch.zeros(1, 8, 8)
    target[0, 2:5, 2:6] = 1
    perfect = [{"mask": (target * 2 - 1) * 30}]  # sigmoid ~ the target exactly
    wrong = [{"mask": -(target * 2 - 1) * 30}]
    assert "loss_dice" not in efn_losses(perfect, target)
    assert efn_losses(perfect, target, dice_weight=2.0)["loss_dice"].item() < 1e-6
    # the complement predicted: |P.G| = 0, |P| = 64 - 12 = 52, |G| = 12; 1 - eps / (52 + 12 + eps) with eps = 1
    assert efn_losses(wrong, target, dice_weight=2.0)["loss_dice"].item() == pytest.approx(2 * (1 - 1 / 65), abs=1e-5)
