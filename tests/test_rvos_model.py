"""Two-stream referring video model: builders (tiny configs), gradients, the single-frame control, VLMG and LMDF
against hand-computed cases, per-layer text access, model folders, and sliding-window inference (every frame
once, from the window where it is most central, with memory that does not grow with the video)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from vlalign.data.clips import assign_frames, sliding_windows
from vlalign.models.pretrained import build_model, from_pretrained, save_pretrained
from vlalign.models.rvos import LMDF, RVOS_BUILDERS, VLMG, text_stage_layers
from vlalign.models.rvos.lmdf import dynamic_filter, rgb_difference
from vlalign.models.text import HFTextEncoder
from vlalign.video_predictor import VideoSegmenter

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

SIZE, T = 64, 3
TINY = {"input_size": SIZE, "num_frames": T, "decoder_dim": 16, "lmdf_groups": 4, "pretrained_backbone": False,
        "pretrained_text": False}
TINY_RESNET = {"backbone": "resnet", "backbone_kwargs": {"depths": [1, 1, 1, 1], "planes": [4, 8, 16, 32],
                                                         "stem_channels": 8}}
# Lite keeps its real EfficientNet-Lite0 (random weights), without stochastic depth: a dropped block would get
# no gradient in the step that drops it.
PER_BUILDER = {"twostream_r101": TINY_RESNET, "twostream_lite": {"backbone_kwargs": {"drop_path_rate": 0.0}}}


def tiny(bert_dir, name="twostream_r101", seed=0, **extra):
    torch.manual_seed(seed)
    return build_model(name, **{**TINY, "text_dir": bert_dir, **PER_BUILDER[name], **extra})


def clip_batch(model, texts=("the man on the left", "a big white dog"), t=T):
    tok = model.tokenize(list(texts))
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(len(texts), t, 3, SIZE, SIZE, generator=g)
    masks = torch.zeros(len(texts), t, SIZE, SIZE)
    masks[0, :, 8:40, 12:52] = 1
    masks[1, :, 24:60, 4:36] = 1
    valid = torch.ones(len(texts), t, dtype=torch.bool)
    valid[1, 0] = False
    return frames, tok["tokens"], tok["token_mask"], masks, valid


def silent_parameters(model):
    return {n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}


@pytest.mark.parametrize("name", list(RVOS_BUILDERS))
def test_every_builder_trains_and_every_parameter_gets_a_gradient(bert_dir, name):
    """The VLMG gates start shut with a zero last layer, so at the first step the layers behind them see no
    gradient; after one step every parameter gets a non-zero gradient."""
    model = tiny(bert_dir, name)
    frames, tokens, mask, masks, valid = clip_batch(model)
    assert not mask.all()  # the batch holds padding
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    silent = []
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        out = model(frames, tokens, mask, masks=masks, valid=valid)
        sum(v for k, v in out.items() if k.startswith("loss_")).backward()
        silent.append(silent_parameters(model))
        opt.step()
    queries = {"scores", "query_logits", "loss_instance", "loss_score", "loss_aux_bce", "loss_aux_dice", "loss_select"}
    assert model.config.query_decoder == (name == "twostream_lite")  # the lite recipe decodes with queries
    expected = {"logits", "loss_bce", "loss_dice"} | (queries if model.config.query_decoder else set())
    assert set(out) == expected and out["logits"].shape == (2, T, SIZE, SIZE)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert silent[0] and all(".gate." in n or "vlmg." in n for n in silent[0])
    assert not silent[1], silent[1]
    assert any(isinstance(m, LMDF) for m in model.necks)


def test_losses_count_only_valid_frames(bert_dir):
    model = tiny(bert_dir).eval()
    frames, tokens, mask, masks, valid = clip_batch(model)
    with torch.no_grad():
        base = model(frames, tokens, mask, masks=masks, valid=valid)
        wrong = masks.clone()
        wrong[1, 0] = 1 - wrong[1, 0]  # an invalid frame's target: must not matter
        same = model(frames, tokens, mask, masks=wrong, valid=valid)
        changed = model(frames, tokens, mask, masks=wrong)  # all frames valid: now it matters
        none = model(frames, tokens, mask, masks=masks, valid=torch.zeros_like(valid))
    assert torch.equal(base["loss_bce"], same["loss_bce"]) and torch.equal(base["loss_dice"], same["loss_dice"])
    assert not torch.allclose(base["loss_bce"], changed["loss_bce"])
    assert none["loss_bce"] == 0 and none["loss_dice"] == 0


def test_single_frame_control_and_temporal_mixing(bert_dir):
    """LMDF mixes the frames of a clip (a frame's prediction changes when another frame changes); the control
    (lmdf=False, num_frames=1) has no LMDF and segments clips of one frame."""
    model = tiny(bert_dir).eval()
    frames, tokens, mask, _, _ = clip_batch(model)
    changed = frames.clone()
    changed[:, 0] = torch.rand_like(changed[:, 0])
    with torch.no_grad():
        a, b = model(frames, tokens, mask)["logits"], model(changed, tokens, mask)["logits"]
    assert not torch.allclose(a[:, 2], b[:, 2])

    control = tiny(bert_dir, lmdf=False, num_frames=1).eval()
    assert not any(isinstance(m, LMDF) for m in control.modules())
    assert sum(p.numel() for p in control.parameters()) < sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        out = control(frames[:, :1], tokens, mask)["logits"]
    assert out.shape == (2, 1, SIZE, SIZE) and torch.isfinite(out).all()


def test_dynamic_filter_matches_a_loop_over_positions():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 5, 7, generator=g)
    kernels = torch.randn(2, 3, 9, 5, 7, generator=g)  # 3 groups of 2 channels, 3x3 taps
    for r in (1, 2):
        ours = dynamic_filter(x, kernels, r)
        padded = torch.nn.functional.pad(x, (r, r, r, r))
        ref = torch.zeros_like(x)
        for i in range(5):
            for j in range(7):
                for a in range(3):
                    for b in range(3):
                        k = kernels[:, :, a * 3 + b, i, j].repeat_interleave(2, dim=1)  # (2, 6)
                        ref[:, :, i, j] += k * padded[:, :, i + a * r, j + b * r]
        torch.testing.assert_close(ours, ref)


def test_lmdf_one_hot_kernels_shift_the_feature():
    """Kernels that put all their weight on the right-hand tap copy each position's right neighbour."""
    lmdf = LMDF(in_dim=4, lang_dim=3, dim=4, dilations=(1,), groups=2)
    x = torch.randn(2 * 3, 4, 5, 6)
    f = lmdf.lateral(x)
    kernels = torch.zeros(6, 2, 9, 5, 6)
    kernels[:, :, 5] = 1  # tap (a=1, b=2): same row, next column
    shifted = dynamic_filter(f, kernels)
    torch.testing.assert_close(shifted[..., :-1], f[..., 1:])
    assert (shifted[..., -1] == 0).all()
    motion = torch.randn(6, 3, 20, 24)
    assert lmdf(x, torch.randn(2, 3), num_frames=3, motion=motion).shape == (6, 4, 5, 6)
    with pytest.raises(ValueError, match="motion"):
        lmdf(x, torch.randn(2, 3), num_frames=3)


def test_rgb_difference_by_hand_and_lmdf_sees_it():
    frames = torch.arange(4.0)[None, :, None, None, None].expand(1, 4, 3, 2, 2) ** 2  # frame t is t^2 everywhere
    diff = rgb_difference(frames)  # x_t+1 - x_t-1, one-sided at the ends: 1-0, 4-0, 9-1, 9-4
    assert diff.shape == (4, 3, 2, 2)
    assert diff[:, 0, 0, 0].tolist() == [1.0, 4.0, 8.0, 5.0]
    assert (rgb_difference(frames[:, :1]) == 0).all()
    torch.manual_seed(0)
    lmdf = LMDF(in_dim=4, lang_dim=3, dim=4, dilations=(1,), groups=2).eval()
    x, s = torch.randn(3, 4, 5, 6), torch.randn(1, 3)
    still, moving = torch.zeros(3, 3, 20, 24), torch.zeros(3, 3, 20, 24)
    moving[:, :, :, :4] = 1.0  # a band where something changed
    assert not torch.allclose(lmdf(x, s, 3, still), lmdf(x, s, 3, moving))


def test_vlmg_words_see_every_frame_of_the_clip():
    torch.manual_seed(0)
    vlmg = VLMG(vis_dim=8, lang_dim=6)
    nn.init.normal_(vlmg.attention.lang_gate.net[2].weight)  # open the gates (zero at initialisation)
    nn.init.normal_(vlmg.attention.vis_gate.net[2].weight)
    x = torch.randn(2 * 3, 8, 4, 4)
    words, word_mask = torch.randn(2, 5, 6), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    y, w = vlmg(x, words, word_mask)
    assert y.shape == x.shape and w.shape == words.shape
    assert (w[0, 3:] == 0).all()  # padded words stay zero
    x2 = x.clone()
    x2[2] += 1.0  # the last frame of the first clip
    _, w2 = vlmg(x2, words, word_mask)
    assert not torch.allclose(w2[0], w[0]) and torch.equal(w2[1], w[1])  # clip 1's words, not clip 2's


def test_text_stage_layers_and_per_layer_access(tmp_path):
    assert text_stage_layers(12) == [(0, 3), (3, 6), (6, 9), (9, 12)]
    assert text_stage_layers(6) == [(0, 1), (1, 2), (2, 4), (4, 6)]
    assert text_stage_layers(1) == [(0, 0), (0, 0), (0, 0), (0, 1)]
    assert text_stage_layers(6, counts=[3, 3, 0, 0]) == [(0, 3), (3, 6), (6, 6), (6, 6)]
    with pytest.raises(ValueError, match="summing to"):
        text_stage_layers(6, counts=[1, 1, 1, 1])

    transformers.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=32).save_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "dog", "man"]))
    torch.manual_seed(0)
    enc = HFTextEncoder.from_dir(tmp_path, pretrained=False).eval()
    tok = enc.tokenize(["the dog", "the man the dog"])
    with torch.no_grad():
        hidden, layer_mask = enc.embed(tok["tokens"], tok["token_mask"])
        for start, stop in [(0, 1), (1, 1), (1, 3)]:
            hidden = enc.run_layers(hidden, layer_mask, start, stop)
        ref = enc(tok["tokens"], tok["token_mask"])
    assert enc.num_layers == 3
    torch.testing.assert_close(hidden[tok["token_mask"]], ref[tok["token_mask"]])


def test_save_and_load_round_trip(bert_dir, tmp_path):
    model = tiny(bert_dir, "twostream_lite").eval()
    frames, tokens, mask, _, _ = clip_batch(model)
    save_pretrained(model, tmp_path / "m")
    loaded = from_pretrained(tmp_path / "m")
    assert dataclasses.asdict(loaded.config) == {**dataclasses.asdict(model.config),
                                                 "text_dir": str(tmp_path / "m" / "text"),
                                                 "pretrained_text": False, "pretrained_backbone": False}
    with torch.no_grad():
        torch.testing.assert_close(loaded(frames, tokens, mask)["logits"], model(frames, tokens, mask)["logits"])


# ------------------------------------------------------------------------------------------- sliding window
class WindowProbe(nn.Module):
    """A stand-in clip model: every frame's logits are the index of the window's first frame (frames carry
    their own index in their pixels), plus 1000 x the expression number."""

    def __init__(self, num_frames: int, size: int = 8):
        super().__init__()
        self.config = type("Config", (), {"num_frames": num_frames, "input_size": size})()
        self.weight = nn.Parameter(torch.zeros(()))
        self.calls = 0

    def tokenize(self, texts):
        return {"tokens": torch.arange(len(texts))[:, None], "token_mask": torch.ones(len(texts), 1, dtype=bool)}

    def forward(self, frames, tokens, token_mask):
        self.calls += 1
        first = (frames[:, 0].mean(dim=(1, 2, 3)) * 255).round() + 1000 * tokens[:, 0]  # (E,)
        return {"logits": first[:, None, None, None].expand(-1, frames.shape[1], *frames.shape[-2:]).float()}


def video(n: int):
    for i in range(n):  # frame i is uniformly grey level i (mod 256): the probe reads it back
        yield np.full((6, 10, 3), i % 256, dtype=np.uint8)


@pytest.mark.parametrize("n,window,stride", [(23, 5, 3), (10, 5, 5), (9, 4, 1), (2, 5, 3), (5, 5, 2), (1, 3, 2)])
def test_sliding_window_covers_every_frame_from_its_most_central_window(n, window, stride):
    probe = WindowProbe(window)
    seg = VideoSegmenter(probe, stride=stride)
    out = list(seg.stream_logits(video(n), ["a", "b"]))
    assert [i for i, *_ in out] == list(range(n))
    windows = sliding_windows(n, window, stride)
    expected = [windows[w][0] for w, _ in assign_frames(windows, n)]
    assert [int(lg[0, 0, 0]) for _, _, lg, _ in out] == expected
    assert all(int(lg[1, 0, 0]) == e + 1000 for (_, _, lg, _), e in zip(out, expected))  # expressions batched
    assert probe.calls == len(windows)


@pytest.mark.parametrize("n,window,stride,dilation", [(23, 3, 2, 2), (20, 5, 3, 3), (4, 3, 2, 2), (1, 3, 2, 3)])
def test_dilated_windows_segment_interleaved_sub_videos(n, window, stride, dilation):
    """Frames `dilation` apart form a clip (the spacing the model trained with); every frame is still predicted
    once, in order, by the most central window of its sub-video (frames k, k + d, ...)."""
    probe = WindowProbe(window)
    clips = []
    forward = probe.forward
    probe.forward = lambda frames, *a: clips.append((frames[0, :, 0].mean(dim=(1, 2)) * 255).round().tolist()) \
        or forward(frames, *a)
    probe.config.frame_stride = dilation
    seg = VideoSegmenter(probe, stride=stride)
    assert seg.dilation == dilation
    out = list(seg.stream_logits(video(n), ["a"]))
    assert [i for i, *_ in out] == list(range(n))
    for clip in clips:  # consecutive frames of a clip are `dilation` apart (or repeated in a too-short sub-video)
        assert all(b - a in (0, dilation) for a, b in zip(clip, clip[1:]))
    for k in range(min(dilation, n)):
        sub = list(range(k, n, dilation))
        windows = sliding_windows(len(sub), window, stride)
        expected = [sub[windows[w][0]] for w, _ in assign_frames(windows, len(sub))]
        assert [int(out[i][2][0, 0, 0]) for i in sub] == expected


def test_sliding_window_memory_does_not_grow_with_the_video():
    held = []
    for n in (40, 250):
        seg = VideoSegmenter(WindowProbe(5), stride=3)
        assert sum(1 for _ in seg.stream(video(n), ["a"])) == n
        held.append(seg.max_held)
    assert held[0] == held[1] <= 5 + 5 + 3


def test_video_segmenter_with_a_real_tiny_model(bert_dir):
    seg = VideoSegmenter(tiny(bert_dir), stride=2)
    frames = [np.random.default_rng(i).integers(0, 255, (30, 40, 3), dtype=np.uint8) for i in range(7)]
    out = list(seg.stream(iter(frames), ["the man on the left", "a big white dog", "the dog"]))
    assert [i for i, *_ in out] == list(range(7))
    assert all(len(m) == 3 and all(x.shape == (30, 40) and x.dtype == bool for x in m) for _, _, m in out)
    with pytest.raises(ValueError, match="non-empty list"):
        list(seg.stream(iter(frames), "the dog"))
