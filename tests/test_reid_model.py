"""CLIP4VI-ReID: losses against hand-computed cases, the PK sampler, the training set, every builder in every stage."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vlalign.data.reid_train import PKBatchSampler, ReidTrainSet, remap_grey
from vlalign.data.sysu import ReidImages
from vlalign.models.reid.losses import smooth_ce, supcon_loss, triplet_hard_loss

# ---- losses ------------------------------------------------------------------------------------------------


def test_smooth_ce_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    log_z = math.log(math.exp(2) + 1 + math.exp(-1))
    log_p = [2 - log_z, -log_z, -1 - log_z]
    eps = 0.3
    target = [1 - eps + eps / 3, eps / 3, eps / 3]
    expected = -sum(t * lp for t, lp in zip(target, log_p))
    assert smooth_ce(logits, torch.tensor([0]), eps).item() == pytest.approx(expected, rel=1e-6)
    assert smooth_ce(logits, torch.tensor([0]), 0.0).item() == pytest.approx(-log_p[0], rel=1e-6)


def test_supcon_with_repeated_labels_matches_hand_computation():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    candidates = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 2.0]])
    # anchor 0 (label 7) has two positives (candidates 0 and 1); anchor 1 (label 3) one (candidate 2)
    loss = supcon_loss(anchors, candidates, torch.tensor([7, 3]), torch.tensor([7, 7, 3]), scale=2.0)
    lz0 = math.log(math.exp(2.0) + math.exp(1.0) + math.exp(0.0))
    lz1 = math.log(math.exp(0.0) + math.exp(1.0) + math.exp(4.0))
    a0 = -((2.0 - lz0) + (1.0 - lz0)) / 2
    a1 = -(4.0 - lz1)
    assert loss.item() == pytest.approx((a0 + a1) / 2, rel=1e-6)


def test_supcon_ignores_anchors_without_positive_and_refuses_none():
    a, c = torch.eye(2), torch.eye(2)
    only_first = supcon_loss(a, c, torch.tensor([0, 5]), torch.tensor([0, 1]))
    lz = math.log(math.e + 1)
    assert only_first.item() == pytest.approx(-(1 - lz), rel=1e-6)
    with pytest.raises(ValueError, match="no anchor"):
        supcon_loss(a, c, torch.tensor([8, 9]), torch.tensor([0, 1]))


def test_triplet_hard_mining_matches_hand_computation():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # anchor 3.0: hardest positive 7.0 (d 4), hardest negative 1.0 (d 2): 4 - 2 + 0.3; the others are satisfied
    assert triplet_hard_loss(x, labels, 0.3).item() == pytest.approx(2.3 / 4, rel=1e-5)
    # across modalities only: anchor 3.0 (modality 1) sees 0.0 (neg, d 3) and 7.0 (pos, d 4): 4 - 3 + 0.3
    cross = triplet_hard_loss(x, labels, 0.3, modalities=torch.tensor([0, 1, 1, 0]))
    assert cross.item() == pytest.approx(1.3 / 4, rel=1e-5)
    with pytest.raises(ValueError, match="positive and a negative"):
        triplet_hard_loss(x, torch.tensor([0, 1, 2, 3]))


def test_triplet_gradient_is_finite_for_identical_features():
    x = torch.zeros(4, 3, requires_grad=True)
    triplet_hard_loss(x, torch.tensor([0, 0, 1, 1])).backward()
    assert torch.isfinite(x.grad).all()


# ---- PK sampler --------------------------------------------------------------------------------------------


class _Labelled:
    """A dataset stub: 6 identities, identity 5 without infrared images."""

    def __init__(self):
        labels, modalities = [], []
        for pid in range(6):
            labels += [pid] * 5 + ([pid] * 3 if pid != 5 else [])
            modalities += [0] * 5 + ([1] * 3 if pid != 5 else [])
        self.labels, self.modalities = np.array(labels), np.array(modalities)

    def __len__(self):
        return len(self.labels)


def test_pk_sampler_draws_p_identities_with_both_modalities():
    data = _Labelled()
    sampler = PKBatchSampler(data, 8, seed=3, num_instances=4)  # P = 2 identities x K = 4
    assert sampler.iters_per_epoch == 3
    sampler.set_epoch(0)
    batches = list(sampler)
    assert len(batches) == 3
    seen = []
    for batch in batches:
        groups = [batch[i:i + 4] for i in range(0, 8, 4)]
        ids = [set(data.labels[g].tolist()) for g in groups]
        assert all(len(s) == 1 for s in ids) and len(set.union(*ids)) == 2  # P distinct identities, K each
        for g in groups:
            mods = data.modalities[g].tolist()
            pid = data.labels[g[0]]
            assert mods == ([0, 0, 1, 1] if pid != 5 else [0, 0, 0, 0])
        seen += [s.pop() for s in ids]
    assert sorted(seen) == list(range(6))  # an epoch = every identity once


def test_pk_sampler_is_deterministic_and_resumable_and_splits_across_ranks():
    data = _Labelled()
    a, b = PKBatchSampler(data, 8, seed=1, num_instances=4), PKBatchSampler(data, 8, seed=1, num_instances=4)
    a.set_epoch(2)
    b.set_epoch(2)
    full = list(a)
    assert full == list(b)
    b.set_epoch(3)
    assert list(b) != full
    b.set_epoch(2, start_iter=1)
    assert list(b) == full[1:]
    ranks = [PKBatchSampler(data, 4, world_size=2, rank=r, seed=1, num_instances=4) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(2)
    per_rank = [list(r) for r in ranks]
    assert [x + y for x, y in zip(*per_rank)] == full  # same global batches, whole identities per rank


def test_pk_sampler_refuses_bad_sizes():
    with pytest.raises(ValueError, match="multiple of"):
        PKBatchSampler(_Labelled(), 6, num_instances=4)
    with pytest.raises(ValueError, match="even"):
        PKBatchSampler(_Labelled(), 6, num_instances=3)
    with pytest.raises(ValueError, match="identities"):
        PKBatchSampler(_Labelled(), 32, num_instances=4)


# ---- training set ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("reid_images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        path = root / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 20, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    visible = ReidImages.from_lists(paths[:2], [10, 20], [1, 2])
    infrared = ReidImages.from_lists(paths[2:], [20, 10], [3, 6])
    return visible, infrared


def test_train_set_labels_augmentation_and_determinism(tiny_images):
    visible, infrared = tiny_images
    data = ReidTrainSet(visible, infrared, (32, 16), seed=5)
    assert data.num_ids == 2 and data.labels.tolist() == [0, 1, 1, 0] and data.modalities.tolist() == [0, 0, 1, 1]
    item = data[0]
    assert item["image"].shape == (3, 32, 16) and item["pid"] == 0 and item["modality"] == 0
    assert 0 <= item["image"].min() and item["image"].max() <= 1
    assert torch.equal(data[1]["image"], data[1]["image"])  # drawn from (seed, epoch, index)
    data.set_epoch(1)
    assert not torch.equal(data[1]["image"], ReidTrainSet(visible, infrared, (32, 16), seed=5)[1]["image"])
    gray = ReidTrainSet(visible, infrared, (32, 16), flip_prob=0, channel_prob=1.0, erase_prob=0)
    img = gray[0]["image"]
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])  # channel exchange on visible
    plain = ReidTrainSet(visible, infrared, (32, 16), augment=False)[0]["image"]
    assert not torch.equal(plain[0], plain[1])


def test_remap_grey_follows_the_curve_through_its_knots():
    image = torch.tensor([0.0, 0.25, 0.5, 0.6, 1.0]).view(1, 1, 5).expand(3, 1, 5)  # grey: luma = value
    out = remap_grey(image, np.array([0.2, 1.0, 0.0], np.float32))  # up to 1 at grey 0.5, down to 0 at white
    assert torch.allclose(out[0], torch.tensor([0.2, 0.6, 1.0, 0.8, 0.0]), atol=1e-6)
    with pytest.raises(ValueError, match="remap_knots must be >= 2"):
        ReidTrainSet(*_two_sets(), (32, 16), remap_knots=1)


def _two_sets():
    return (ReidImages.from_lists(["a.png"], [1], [1]), ReidImages.from_lists(["b.png"], [1], [3]))


def test_remap_reaches_both_modalities_as_grey_images(tiny_images):
    visible, infrared = tiny_images
    kw = dict(flip_prob=0, channel_prob=0, erase_prob=0, pad=0)
    plain, remapped = ReidTrainSet(visible, infrared, (32, 16), **kw), ReidTrainSet(
        visible, infrared, (32, 16), remap_prob=1.0, **kw)
    for i in range(4):  # visible 0, 1; infrared 2, 3
        a, b = plain[i]["image"], remapped[i]["image"]
        assert torch.equal(b[0], b[1]) and torch.equal(b[1], b[2])
        assert not torch.allclose(a.mean(0), b[0], atol=0.05)  # a new grey level, not the luma
        assert 0 <= b.min() and b.max() <= 1
    assert torch.equal(remapped[2]["image"], remapped[2]["image"])  # the curve is drawn from (seed, epoch, index)


# ---- model -------------------------------------------------------------------------------------------------

STAGE_LOSSES = {1: {"loss_i2t_con", "loss_t2i_con"}, 2: {"loss_id", "loss_triplet", "loss_ife", "loss_i2t"},
                3: {"loss_id", "loss_triplet", "loss_hsa", "loss_i2t"}}


def _lite(bert_dir, **overrides):
    from vlalign.models.reid import clip4vireid_lite

    overrides = {"test_flip": False, **overrides}  # one view: the piece-by-piece checks below read encode()
    return clip4vireid_lite(num_ids=4, pretrained_backbone=False, text_dir=bert_dir, pretrained_text=False,
                            image_size=(32, 16), embed_dim=16, **overrides)


def _vitb16():
    from vlalign.assets import AssetMissing

    clip_model = pytest.importorskip("vlalign.models.clip.model")
    from vlalign.models.reid import clip4vireid_vitb16

    config = dataclasses.asdict(clip_model.tiny_clip_config(image_size=(32, 16)))
    try:
        return clip4vireid_vitb16(num_ids=4, pretrained_backbone=False, clip_config=config, image_size=(32, 16),
                                  hsa_layers=1)
    except AssetMissing as e:
        pytest.skip(str(e))


@pytest.fixture(params=["lite", "vitb16"])
def model(request, bert_dir, one_thread):
    torch.manual_seed(0)
    return _lite(bert_dir) if request.param == "lite" else _vitb16()


def _batch():
    g = torch.Generator().manual_seed(0)
    return (torch.rand(8, 3, 32, 16, generator=g), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]),
            torch.tensor([0, 1] * 4))


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_every_stage_trains_exactly_its_parameters(model, stage):
    image, pid, modality = _batch()
    model.set_stage(stage)
    model.train()
    out = model(image=image, pid=pid, modality=modality)
    assert set(out) == STAGE_LOSSES[stage]
    assert all(torch.isfinite(v) for v in out.values())
    sum(out.values()).backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    for name, p in model.named_parameters():
        if name in trainable:
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"stage {stage}: no gradient for {name}"
        else:
            assert p.grad is None, f"stage {stage}: frozen {name} got a gradient"
    image_params = {n for n in trainable if n.startswith("image_encoder.")}
    total_image = sum(1 for n, _ in model.named_parameters() if n.startswith("image_encoder."))
    assert ("prompt.ctx" in trainable) == (stage != 2)
    assert len(image_params) == {1: 0, 2: total_image}.get(stage, len(image_params))
    if stage == 3:  # HSA: only the high-level image layers
        assert 0 < len(image_params) < total_image
    assert not any(n.endswith("bottleneck.bias") or n.endswith("bottleneck_proj.bias") for n in trainable)


def test_stage1_accepts_precomputed_features_and_text_table_is_frozen_semantics(model):
    image, pid, modality = _batch()
    model.set_stage(1)
    with torch.no_grad():
        model.eval()
        proj = model.image_encoder(image)[1]
        model.train()
        a = model(image=image, pid=pid)
        b = model(image_feature=proj, pid=pid)
    assert torch.allclose(a["loss_i2t_con"], b["loss_i2t_con"], atol=1e-5)
    model.set_stage(2)
    with torch.no_grad():
        expected = model.text_features(torch.arange(4))
    assert torch.allclose(model.text_table, expected, atol=1e-5)


def test_frozen_parts_stay_in_eval_mode(bert_dir, one_thread):
    model = _lite(bert_dir, hsa_layers=5)  # the lite recipe trains all 16 blocks in HSA; 5 leaves some frozen
    model.set_stage(3)
    model.train()
    blocks = model.image_encoder.backbone._blocks
    assert not blocks[0]._bn1.training and blocks[-1]._bn1.training  # low layers frozen, high ones train
    assert not model.image_encoder.backbone._bn0.training  # the stem never trains in HSA
    assert not model.text_encoder.encoder.training  # the pretrained text tower never trains (dropout off)
    model.set_stage(1)
    assert not model.image_encoder.training and model.training


@pytest.mark.parametrize("tower", ["lite", "vitb16"])
def test_frozen_blocks_keep_the_stem_and_first_blocks_out_of_ife_and_hsa(tower, bert_dir, one_thread):
    torch.manual_seed(0)
    model = _lite(bert_dir, frozen_blocks=3, hsa_layers=16) if tower == "lite" else _vitb16()
    if tower == "vitb16":  # the tiny CLIP has 2 blocks; freeze the first
        model.config.frozen_blocks = 1
    encoder, n = model.image_encoder, model.config.frozen_blocks
    blocks = encoder.backbone._blocks if tower == "lite" else encoder.visual.transformer.resblocks
    stem = encoder.backbone._conv_stem.weight if tower == "lite" else encoder.visual.conv1.weight
    image, pid, modality = _batch()
    for stage in (2, 3):
        model.set_stage(stage)
        model.train()
        sum(model(image=image, pid=pid, modality=modality).values()).backward()
        assert not stem.requires_grad and stem.grad is None
        assert all(p.grad is None for b in blocks[:n] for p in b.parameters())
        assert all(p.grad is not None for p in blocks[n].parameters()), f"stage {stage}: block {n} must train"
        assert not any(m.training for m in blocks[n - 1].modules())  # frozen BatchNorms keep ImageNet statistics
        model.zero_grad(set_to_none=True)
    with pytest.raises(ValueError, match="frozen_blocks must be in 0..15"):
        _lite(bert_dir, frozen_blocks=16)


def test_test_center_renormalises_after_subtracting_and_old_folders_still_load(bert_dir, one_thread, tmp_path):
    from safetensors.torch import load_file, save_file

    from vlalign.engine.checkpoint import MODEL_FILE, load_checkpoint, save_checkpoint
    from vlalign.models.pretrained import from_pretrained, save_pretrained

    torch.manual_seed(0)
    model = _lite(bert_dir, test_center=True).eval()
    image, _, _ = _batch()
    with torch.no_grad():
        plain = model.extract(image)  # the zero centre of an unfitted model changes nothing
        feat, proj, _ = model.encode(image)
        assert torch.allclose(plain, F.normalize(torch.cat([feat, proj], 1), dim=1), atol=1e-6)
        model.feature_center.copy_(plain[:3].mean(0))
        centred = model.extract(image)
    assert torch.allclose(centred, F.normalize(plain - plain[:3].mean(0), dim=1), atol=1e-6)
    assert not torch.allclose(centred, plain, atol=1e-3)
    save_pretrained(model, tmp_path / "m")
    with torch.no_grad():
        assert torch.allclose(from_pretrained(tmp_path / "m")(image=image)["features"], centred, atol=1e-5)
    # a folder written before the centre existed loads, with a zero centre; other missing keys still fail
    weights = tmp_path / "m" / "model.safetensors"
    state = load_file(str(weights))
    del state["feature_center"]
    save_file(state, str(weights))
    with torch.no_grad():
        assert torch.allclose(from_pretrained(tmp_path / "m")(image=image)["features"], plain, atol=1e-5)
    del state["bottleneck.weight"]
    save_file(state, str(weights))
    with pytest.raises(ValueError, match="bottleneck.weight"):
        from_pretrained(tmp_path / "m")
    # and a training checkpoint written before it resumes
    ckpt = save_checkpoint(tmp_path / "ck", 1, model, {}, {})
    state = load_file(str(ckpt / MODEL_FILE))
    del state["feature_center"]
    save_file(state, str(ckpt / MODEL_FILE))
    load_checkpoint(ckpt, model)


def test_test_features_and_save_load_round_trip(model, tmp_path):
    from vlalign.models.pretrained import from_pretrained, save_pretrained

    image, _, _ = _batch()
    model.eval()
    with torch.no_grad():
        feats = model(image=image)["features"]
    dim = model.image_encoder.feat_dim + model.image_encoder.proj_dim
    assert feats.shape == (8, dim)
    assert torch.allclose(feats.norm(dim=1), torch.ones(8), atol=1e-5)
    save_pretrained(model, tmp_path / "m")
    loaded = from_pretrained(tmp_path / "m")
    with torch.no_grad():
        assert torch.allclose(loaded(image=image)["features"], feats, atol=1e-5)


def test_wrong_labels_and_missing_inputs_are_refused(bert_dir, one_thread):
    model = _lite(bert_dir)
    image, pid, modality = _batch()
    with pytest.raises(ValueError, match="pid labels"):
        model(image=image, pid=pid + 4, modality=modality)
    model.set_stage(2)
    with pytest.raises(ValueError, match="needs image and modality"):
        model(image=image, pid=pid)
    with pytest.raises(TypeError, match="unknown CLIP4VI-ReID option"):
        from vlalign.models.reid import clip4vireid_lite

        clip4vireid_lite(no_such_option=1)


def test_vitb16_without_weights_says_what_to_pass():
    from vlalign.models.reid import clip4vireid_vitb16

    with pytest.raises(ValueError, match="clip_path"):
        clip4vireid_vitb16(num_ids=4)


def test_vitb16_loads_a_local_clip_checkpoint(tmp_path, one_thread):
    clip_model = pytest.importorskip("vlalign.models.clip.model")
    pytest.importorskip("vlalign.models.clip.convert")
    from vlalign.assets import AssetMissing
    from vlalign.models.reid import clip4vireid_vitb16

    torch.manual_seed(0)
    # heads of 64 channels: what a state dict without a config implies (OpenAI's head width)
    clip = clip_model.CLIP(clip_model.tiny_clip_config(image_size=(32, 16), vision_width=64, vision_heads=1,
                                                       text_width=64, text_heads=1))
    path = tmp_path / "tiny_clip.pt"
    torch.save(clip.state_dict(), path)  # OpenAI's state-dict keys
    try:
        model = clip4vireid_vitb16(num_ids=3, clip_path=str(path), image_size=(32, 16))
    except AssetMissing as e:
        pytest.skip(str(e))
    assert torch.equal(model.image_encoder.visual.conv1.weight, clip.visual.conv1.weight)
    assert torch.equal(model.text_encoder.clip.token_embedding.weight, clip.token_embedding.weight)
    assert model.config.clip_config["vision_width"] == 64  # stored: the folder rebuilds without the file
    ids = torch.tensor([1, 2])
    expected = clip.encode_text_embeddings(model.prompt(ids), model.text_encoder.eot_index.expand(2))
    assert torch.allclose(model.text_features(ids), expected, atol=1e-5)


def test_lite_last_stride_one_doubles_the_last_map_with_the_same_weights(bert_dir, one_thread):
    """Re-id's "last stride 1": the stride-32 stage keeps stride 16; weights and keys are unchanged."""
    torch.manual_seed(0)
    strided = _lite(bert_dir, last_stride=2)
    kept = _lite(bert_dir, last_stride=1)
    kept.load_state_dict(strided.state_dict())  # same parameters, strictly
    image = torch.rand(2, 3, 64, 32)
    with torch.no_grad():
        maps_2, maps_1 = strided.image_encoder.backbone(image), kept.image_encoder.backbone(image)
    assert maps_2[-1].shape[-2:] == (2, 1) and maps_1[-1].shape[-2:] == (4, 2)
    assert torch.equal(maps_2[2], maps_1[2])  # everything before the changed block is the same computation
    assert kept.image_encoder.backbone.strides[-1] == 16
    with pytest.raises(ValueError, match="last_stride"):
        _lite(bert_dir, last_stride=4)


def test_gray_input_reduces_every_image_to_its_luma_in_training_and_at_test(bert_dir, one_thread):
    torch.manual_seed(0)
    gray = _lite(bert_dir, gray_input=True).eval()
    colour = _lite(bert_dir)
    colour.load_state_dict(gray.state_dict())
    colour.eval()
    image = torch.rand(2, 3, 32, 16)
    luma = (0.299 * image[:, 0] + 0.587 * image[:, 1] + 0.114 * image[:, 2]).unsqueeze(1).expand_as(image)
    with torch.no_grad():
        assert torch.allclose(gray.extract(image), colour.extract(luma), atol=1e-6)
        assert not torch.allclose(colour.extract(image), colour.extract(luma), atol=1e-3)
        # infrared crops (R = G = B) and CAJ's one-channel images are left as they are
        assert torch.allclose(gray.extract(luma), colour.extract(luma), atol=1e-5)
    gray.set_stage(1)  # stage-1 image features go through the same reduction
    with torch.no_grad():
        assert torch.allclose(gray.encode(image)[1], colour.image_encoder(luma)[1], atol=1e-6)


def test_part_stripes_train_their_heads_and_weigh_like_the_global_feature(bert_dir, one_thread, tmp_path):
    from vlalign.models.pretrained import from_pretrained, save_pretrained

    torch.manual_seed(0)
    model = _lite(bert_dir, parts=2)  # 32x16 input: a 2x1 final map, one row per stripe
    image, pid, modality = _batch()
    for stage in (2, 3):
        model.set_stage(stage)
        model.train()
        model.zero_grad()
        out = model(image=image, pid=pid, modality=modality)
        assert set(out) == STAGE_LOSSES[stage] | {"loss_part_id"}
        out["loss_part_id"].backward()
        for i in range(2):
            assert model.part_classifiers[i].weight.grad.abs().sum() > 0
            assert model.part_bottlenecks[i].weight.grad.abs().sum() > 0
            assert not model.part_bottlenecks[i].bias.requires_grad  # BNNeck: frozen zero bias
    model.eval()
    with torch.no_grad():
        feats = model.extract(image)
        c, d = model.image_encoder.feat_dim, model.image_encoder.proj_dim
        assert feats.shape == (8, c + d + 2 * c)
        assert torch.allclose(feats.norm(dim=1), torch.ones(8), atol=1e-5)
        # cosine of the test features = mean of the global and per-stripe cosines
        feat, proj, stripes = model.encode(image)
        cos = [F.cosine_similarity(torch.cat([feat, proj], 1)[0], torch.cat([feat, proj], 1)[1], dim=0)]
        cos += [F.cosine_similarity(stripes[0, i], stripes[1, i], dim=0) for i in range(2)]
        assert torch.allclose(feats[0] @ feats[1], sum(cos) / 3, atol=1e-5)
        # the stripes are the final map's rows (head to feet)
        fmap = model.image_encoder.backbone(image)[-1]
        assert torch.allclose(stripes[:, 0], fmap[:, :, 0].mean(-1), atol=1e-6)
    save_pretrained(model, tmp_path / "m")
    with torch.no_grad():
        assert torch.allclose(from_pretrained(tmp_path / "m").extract(image), feats, atol=1e-5)
    with pytest.raises(ValueError, match="at least 3 rows"):
        _lite(bert_dir, parts=3).extract(image)
    with pytest.raises(ValueError, match="parts must be >= 0"):
        _lite(bert_dir, parts=-1)
    from vlalign.models.reid import CLIP4VIReIDConfig

    with pytest.raises(ValueError, match="needs image_tower='efficientnet_lite0'"):
        CLIP4VIReIDConfig(parts=2)  # the ViT tower has no stripes
    with pytest.raises(ValueError, match=r"stage_ema values must be in \[0, 1\)"):
        CLIP4VIReIDConfig(stage_ema=(0.0, 1.0, 0.0))  # 1 would never move off the starting weights
    with pytest.raises(ValueError, match="stage_ema needs 3 values"):
        CLIP4VIReIDConfig(stage_ema=(0.999,))


def test_test_flip_feature_is_mirror_invariant_and_sums_both_views(bert_dir, one_thread):
    torch.manual_seed(0)
    flip = _lite(bert_dir, test_flip=True, parts=2).eval()
    image = torch.rand(3, 3, 32, 16)
    with torch.no_grad():
        feats = flip.extract(image)
        assert torch.allclose(feats, flip.extract(image.flip(-1)), atol=1e-5)
        flip.config.test_flip = False
        plain, mirror = flip.encode(image), flip.encode(image.flip(-1))
        assert not torch.allclose(flip.extract(image), feats, atol=1e-3)  # the mirror view changes the feature
    summed = torch.cat([plain[0] + mirror[0], plain[1] + mirror[1]], 1)
    pieces = [F.normalize(summed, dim=1), *F.normalize(plain[2] + mirror[2], dim=2).unbind(1)]
    assert torch.allclose(feats, torch.cat(pieces, 1) / 3 ** 0.5, atol=1e-5)
