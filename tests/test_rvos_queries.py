"""The two-stream model's per-object query decoder (vlalign/models/rvos/queries.py): trajectory descriptors by
hand, Hungarian matching of queries to objects, the losses, and the model built with it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import load_benchmark
from test_rvos_model import SIZE, T, clip_batch, silent_parameters, tiny  # noqa: E402  (sibling test module)

from vlalign.models.rvos.lmdf import rgb_difference
from vlalign.models.rvos.queries import (
    descriptor,
    match_objects,
    object_masks,
    query_losses,
    selection_loss,
    trajectory,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_trajectory_by_hand():
    """One cell moving right along the top row of a 4x4 map over 3 frames: cell centres x = -0.75, -0.25,
    0.25 (slope 0.5 per unit of t in [-1, 1]), y = -0.75, area 1/16, disjoint frames (IoU 0)."""
    probs = torch.zeros(3, 4, 4)
    for t in range(3):
        probs[t, 0, t] = 1
    d = trajectory(probs)
    expected = [-0.25, -0.75, math.log(1 / 16 + 1e-4), 0.5, 0.0, 0.0, 0.0]
    assert torch.allclose(d, torch.tensor(expected), atol=1e-6)
    still = trajectory(probs[:1].expand(3, -1, -1))  # the same cell in every frame
    assert torch.allclose(still[3:], torch.tensor([0.0, 0.0, 0.0, 1.0]))
    grow = torch.zeros(2, 3, 4, 4)
    grow[0, 0, :2, :2], grow[0, 1, :3, :3], grow[0, 2] = 1, 1, 1  # batch dims are kept; area slope > 0
    assert trajectory(grow).shape == (2, 7) and trajectory(grow)[0, 5] > 0
    assert torch.allclose(trajectory(probs[:1])[3:], torch.tensor([0.0, 0.0, 0.0, 1.0]))  # T = 1


def test_descriptor_adds_the_mean_colour_under_the_mask():
    probs = torch.zeros(1, 2, 3, 4, 4)
    probs[0, 0, :, :2, :2] = 1  # object 0: the top-left 2x2 cells, red there
    rgb = torch.zeros(1, 3, 3, 4, 4)
    rgb[0, :, 0, :2, :2] = 1.0
    rgb[0, :, 2, 2:, 2:] = 0.5  # blue elsewhere, which object 0 does not cover
    d = descriptor(probs, rgb)
    assert d.shape == (1, 2, 10)
    scaled = (trajectory(probs[0, 0]) + torch.tensor([0, 0, 4.0, 0, 0, 0, 0])) * torch.tensor([1, 1, 1, 2, 2, 10, 1.0])
    torch.testing.assert_close(d[0, 0, :7], scaled)  # slopes in cells of the 4x4 map, log area shifted
    torch.testing.assert_close(d[0, 0, 7:], torch.tensor([0.5, -0.5, -0.5]), atol=1e-4, rtol=0)  # red, centred
    torch.testing.assert_close(d[0, 1, 7:], torch.zeros(3))  # an empty mask reads grey


def test_object_masks_put_the_referred_object_first():
    objects = torch.zeros(3, 2, 8, 8, dtype=torch.long)
    objects[0, :, :4, :4] = 3  # clip 0: objects 3 and 1 (the referred one), listed referred-first
    objects[0, :, 4:, 4:] = 1
    objects[1, :, :4, :] = 1  # clip 1: one frame is not annotated -> no objects
    objects[2, :, :4, :] = 2  # clip 2: the referred object is absent -> no objects
    keep = torch.tensor([[True, True], [True, False], [True, True]])
    masks, present = object_masks(objects, keep, (4, 4), max_objects=3)
    assert masks.shape == (3, 3, 2, 4, 4)
    assert present.tolist() == [[True, True, False], [False, False, False], [False, False, False]]
    assert masks[0, 0, :, 2:, 2:].eq(1).all() and masks[0, 0].sum() == 8  # object 1, area-resized
    assert masks[0, 1, :, :2, :2].eq(1).all() and masks[0, 1].sum() == 8  # object 3
    assert masks[1:].eq(0).all() and masks[0, 2].eq(0).all()


def test_selection_loss_by_hand():
    scores = torch.tensor([[2.0, 0.0, 5.0], [1.0, 3.0, 0.0], [4.0, 0.0, 0.0]], requires_grad=True)
    present = torch.tensor([[True, True, False], [True, True, True], [True, False, False]])
    loss = selection_loss(scores, present)  # clip 2 has one object: nothing to choose; clip 0 ignores index 2
    row0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    row1 = -math.log(math.exp(1) / (math.exp(1) + math.exp(3) + 1))
    expected = (row0 + row1) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert scores.grad[0, 0] < 0 < scores.grad[1, 1] and scores.grad[0, 2] == 0 and scores.grad[2].eq(0).all()
    none = selection_loss(scores, present & False)
    assert none.item() == 0 and none.requires_grad


def boxes(t=2, size=16):
    """objects (T, S, S): 1 = the referred box (top left), 2 = another (bottom right); masks (N=3) with query 2
    on object 1, query 0 on object 2 and query 1 on nothing, as logits +-8."""
    objects = torch.zeros(t, size, size, dtype=torch.long)
    objects[:, :6, :6] = 1
    objects[:, 10:, 10:] = 2
    masks = torch.full((3, t, size // 4, size // 4), -8.0)
    masks[2, :, :2, :2] = 8  # stride-4 cells covering object 1 (area-resized: 6 px over 2 cells, partly)
    masks[0, :, 3:, 3:] = 8
    return masks, objects


def test_matching_pairs_queries_with_their_objects():
    masks, objects = boxes()
    keep = torch.ones(2, dtype=torch.bool)
    assert match_objects(masks, torch.zeros(3), objects, keep) == ([2, 0], [1, 2])
    # frames that are not annotated do not count: only frame 1 holds the objects, and there the queries swap
    swapped = masks.clone()
    swapped[:, 1] = masks[[0, 1, 2], 1][[2, 1, 0]]
    assert match_objects(swapped, torch.zeros(3), objects, torch.tensor([False, True])) == ([0, 2], [1, 2])
    assert match_objects(masks, torch.zeros(3), torch.zeros_like(objects), keep) == ([], [])
    # more objects than queries: the referred one is kept
    assert match_objects(masks[:1], torch.zeros(1), objects, keep)[1] == [1]
    # with a score cost, the score breaks a tie between two queries that fit the referred object equally
    tie = masks.clone()
    tie[1] = tie[2]
    assert match_objects(tie, torch.tensor([0.0, 5.0, -5.0]), objects, keep, score_cost=2.0)[0][0] == 1
    assert match_objects(tie, torch.tensor([0.0, -5.0, 5.0]), objects, keep, score_cost=2.0)[0][0] == 2


def test_query_losses_by_case():
    masks, objects = boxes()
    keep = torch.ones(1, 2, dtype=torch.bool)
    scores = torch.tensor([[0.0, 0.0, 0.0]], requires_grad=True)
    m = masks[None].clone().requires_grad_(True)
    losses, owner = query_losses(m, scores, objects[None], keep, (16, 16))
    assert owner.tolist() == [[2, 0, 1]]  # query 2 has the referred object, query 0 the other, query 1 none
    # score: BCE with target (0, 0, 1) at logits 0 is log 2
    assert torch.isclose(losses["loss_score"], torch.tensor(math.log(2)))
    sum(losses.values()).backward()
    assert scores.grad[0, 2] < 0 < scores.grad[0, 0]  # the matched query is pushed up, the others down
    # the unmatched query's mask is pushed towards empty: down everywhere
    assert (m.grad[0, 1] > 0).all()
    # with no object at all every query is unmatched: the mean BCE against 0 of all 3 x 2 x 4 x 4 logits, of
    # which 1 + 4 cells per frame are +8 (queries 0 and 2) and the other 43 are -8
    alone, _ = query_losses(m.detach(), scores.detach(), torch.zeros_like(objects)[None], keep, (16, 16))
    sp = F.softplus(torch.tensor([8.0, -8.0]))
    assert torch.isclose(alone["loss_instance"], (5 * sp[0] + 43 * sp[1]) / 48)
    assert m.grad[0, 0].abs().sum() > 0  # the other object's query does (loss_instance)
    # a perfect fit of both objects costs less than the same masks swapped
    swapped = masks[[2, 1, 0]][None]
    worse, _ = query_losses(swapped, scores.detach(), objects[None], keep, (16, 16))
    assert worse["loss_bce"] == losses["loss_bce"]  # matching follows the objects: the same pairs, re-indexed
    no_target = torch.where(objects == 1, 0, objects)
    empty, owner = query_losses(masks[None], torch.zeros(1, 3), no_target[None], keep, (16, 16))
    assert owner.tolist() == [[2, 0, 0]] and empty["loss_bce"] == 0 and empty["loss_instance"] > 0


def test_query_decoder_model_trains_and_predicts(bert_dir):
    assert tiny(bert_dir, query_decoder=True, query_aux_head=False).decoder.head is None  # no unused parameters
    model = tiny(bert_dir, query_decoder=True, num_queries=4)
    assert model.decoder.head is not None and model.queries is not None  # the auxiliary referring head
    frames, tokens, mask, masks, valid = clip_batch(model)
    objects = masks.long()
    objects[:, :, 44:60, 44:60] = 2  # a second object in both clips, for the instance loss
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    silent = []
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        out = model(frames, tokens, mask, masks=masks, valid=valid, objects=objects)
        sum(v for k, v in out.items() if k.startswith("loss_")).backward()
        silent.append(silent_parameters(model))
        opt.step()
    assert {"logits", "scores", "loss_bce", "loss_dice", "loss_instance", "loss_score", "loss_aux_bce",
            "loss_aux_dice", "loss_select"} <= set(out)
    assert out["loss_select"] > 0  # two objects in each clip: the score chooses between them
    assert out["logits"].shape == (2, T, SIZE, SIZE) and out["scores"].shape == (2, 4)
    assert not silent[1], silent[1]
    model.eval()
    with torch.no_grad():
        pred = model(frames, tokens, mask)
        full = model.queries(*_inputs(model, frames, tokens, mask))[0]
    best = pred["scores"].argmax(1)
    expect = torch.nn.functional.interpolate(full[torch.arange(2), best], size=(SIZE, SIZE), mode="bilinear")
    assert torch.allclose(pred["logits"], expect, atol=1e-5)  # the prediction is the best-scoring query's mask
    with pytest.raises(ValueError, match="objects"):
        model(frames, tokens, mask, masks=masks, objects=objects[:, :1])


def _inputs(model, frames, tokens, mask):
    """The query decoder's inputs, recomputed outside the model's forward."""
    b, t = frames.shape[:2]
    features, sentence = model.encode(frames.flatten(0, 1), tokens, mask.bool())
    maps = [neck(f, sentence, t, rgb_difference(frames)) for neck, f in zip(model.necks, features)]
    pixels = model.decoder.features(maps, sentence.repeat_interleave(t, dim=0))
    return pixels.unflatten(0, (b, t)), maps[-2].unflatten(0, (b, t)), sentence


def test_rvos_queries_benchmark_scores_the_pick_and_the_oracle(bert_dir, tmp_path):
    from vlalign.data.ytvos import RefYTVOS
    from vlalign.synth.ytvos import generate_ytvos

    bench = load_benchmark("rvos_queries.py")
    pred = torch.zeros(3, 4, 4, dtype=torch.bool)
    target = torch.zeros(4, 4, dtype=torch.bool)
    target[:2, :2] = True
    pred[0, :2, :] = True  # 4 of 8
    pred[1, :2, :2] = True  # exact
    assert bench.iou(pred, target).tolist() == [0.5, 1.0, 0.0]
    assert bench.iou(pred[2:], torch.zeros(4, 4, dtype=torch.bool)).tolist() == [1.0]  # both empty

    generate_ytvos(tmp_path / "data", num_videos=3, seed=2, width=64, height=64, frames=(4, 5))
    model = tiny(bert_dir, query_decoder=True, num_queries=3).eval()
    rows = bench.score_queries(model, RefYTVOS(tmp_path / "data", "valid"), max_expressions=3)
    assert len(rows) == 3 and all(r["oracle"] >= r["picked"] for r in rows)
    assert all(r["picked"] == r["oracle"] for r in rows if r["hit"])  # the pick is the oracle's query
    # the summary names the commonest pick and its share (a collapsed score always names one query)
    made = [{"video": "v", "exp_id": str(i), "picked": 0.5, "oracle": 1.0, "hit": i == 0, "pick": p}
            for i, p in enumerate([2, 2, 2, 0])]
    assert "| all | 4 | 0.500 | 1.000 | 0.25 | query 2 (75%) |" in bench.summary(made, None)
    with pytest.raises(SystemExit, match="no query decoder"):
        bench.score_queries(tiny(bert_dir), RefYTVOS(tmp_path / "data", "valid"))


def test_selection_loss_reads_every_sentence_of_the_clip(bert_dir):
    """loss_select = the score's cross-entropy over each clip's true objects, for the clip's own sentence
    (object 1) and for each selection sentence (the object it names), all rows averaged, plus the same over the
    queries matched to an object (on the queries' masks); padding ignored."""
    model = tiny(bert_dir, query_decoder=True, num_queries=4).eval()
    frames, tokens, mask, masks, _ = clip_batch(model)
    valid = torch.ones(2, T, dtype=torch.bool)
    objects = masks.long()
    objects[:, :, 44:60, 44:60] = 2
    extra = model.tokenize(["the small square", "the other one", "a third", "a third"])
    sel_tokens, sel_mask = extra["tokens"].view(2, 2, -1), extra["token_mask"].view(2, 2, -1).clone()
    sel_mask[1, 1] = False
    numbers = torch.tensor([[2, 1], [2, 0]])  # clip 1's second sentence is padding
    with torch.no_grad():
        out = model(frames, tokens, mask, masks=masks, valid=valid, objects=objects, selection_tokens=sel_tokens,
                    selection_token_mask=sel_mask, selection_objects=numbers)
        own = model(frames, tokens, mask, masks=masks, valid=valid, objects=objects)["loss_select"]
        features, sentence = model.encode(frames.flatten(0, 1), tokens, mask.bool())
        maps = [neck(f, sentence, T, rgb_difference(frames)) for neck, f in zip(model.necks, features)]
        base = model.decoder.top_down(maps).unflatten(0, (2, T))
        rgb = F.interpolate(frames.flatten(0, 1), size=base.shape[-2:], mode="area").view(2, T, 3, *base.shape[-2:])
        true, present = object_masks(objects, valid, base.shape[-2:], 4)
        sentences = torch.cat([model.plain_sentence(tokens, mask), model.plain_sentence(extra["tokens"][:3],
                                                                                          extra["token_mask"][:3])])
        clips, targets = torch.tensor([0, 1, 0, 0, 1]), torch.tensor([0, 0, 1, 0, 1])
        scores = model.queries.score(true[clips], base[clips], sentences, rgb[clips])
        logits = scores.masked_fill(~present[clips], float("-inf"))
        # the same rows among the queries that the matching gave an object, on their own masks
        _, owner = query_losses(out["query_logits"], out["scores"], objects, valid, (SIZE, SIZE))
        probs = out["query_logits"].sigmoid()
        q_logits = model.queries.score(probs[clips], base[clips], sentences, rgb[clips])
        q_logits = q_logits.masked_fill(owner[clips] == 0, float("-inf"))
        q_targets = (owner[clips] == targets[:, None] + 1).float().argmax(1)
    assert present[:, :2].all() and not present[:, 2:].any()
    assert sorted(owner[0].tolist()) == sorted(owner[1].tolist()) == [0, 0, 1, 2]  # 2 objects, 4 queries
    expected = F.cross_entropy(logits, targets) + F.cross_entropy(q_logits, q_targets)
    torch.testing.assert_close(out["loss_select"], model.config.select_weight * expected, atol=1e-5, rtol=1e-4)
    alone = F.cross_entropy(logits[:2], targets[:2]) + F.cross_entropy(q_logits[:2], q_targets[:2])
    torch.testing.assert_close(own, model.config.select_weight * alone, atol=1e-5, rtol=1e-4)


def test_selection_inputs_are_checked(bert_dir):
    model = tiny(bert_dir, query_decoder=True, num_queries=3).eval()
    frames, tokens, mask, masks, valid = clip_batch(model)
    extra = model.tokenize(["a", "b"])
    sel_tokens, sel_mask = extra["tokens"][:, None], extra["token_mask"][:, None]  # (2, 1, L)
    args = (frames, tokens, mask)
    with pytest.raises(ValueError, match="go together: got tokens, objects"):
        model(*args, masks=masks, valid=valid, selection_tokens=sel_tokens, selection_objects=torch.ones(2, 1))
    with pytest.raises(ValueError, match=r"selection_tokens \(1, 1, \d+\).*B = 2"):
        model(*args, masks=masks, selection_tokens=sel_tokens[:1], selection_token_mask=sel_mask[:1],
              selection_objects=torch.ones(1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"selection_objects \(2, 2\): expected \(B, E\) = \(2, 1\)"):
        model(*args, masks=masks, selection_tokens=sel_tokens, selection_token_mask=sel_mask,
              selection_objects=torch.ones(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="numbers >= 0"):
        model(*args, masks=masks, selection_tokens=sel_tokens, selection_token_mask=sel_mask,
              selection_objects=-torch.ones(2, 1, dtype=torch.long))
