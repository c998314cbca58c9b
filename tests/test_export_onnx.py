"""ONNX export: `vlalign export onnx` on tiny model folders of every exported family (AlignFormer with
EfficientNet-Lite0 and with Swin, EFN, the CLIP4VI-ReID image encoder); onnxruntime matches PyTorch within
the stated tolerance on batch sizes and token counts other than the traced ones (the image size is fixed,
see vlalign/export_onnx.py) and the graph's inputs are the documented ones; plus the traceable stand-ins
the export swaps in (EFN's GRU and language heads, Swin's 4-D window attention) against the originals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlalign.cli import main
from vlalign.export_onnx import DEFAULT_ATOL, _DenseLanguageHeads, _PaddedGRU, export_onnx, onnxruntime_session
from vlalign.models.backbones.swin import WindowAttention, shifted_window_mask
from vlalign.models.efn.text import PAD, UNK
from vlalign.models.pretrained import build_model, from_pretrained, save_pretrained

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# alignformer_lite (EfficientNet-Lite0, random weights)
TINY = {"input_size": 64, "pixel_dim": 16, "pixel_layers": 1, "pixel_heads": 2, "pixel_ffn_dim": 16,
        "word_ffn_dim": 16, "query_dim": 16, "query_layers": 1, "query_heads": 2, "query_ffn_dim": 16,
        "mask_dim": 8, "pretrained_backbone": False, "pretrained_text": False}

# Swin with two blocks per stage: the second is shifted, so the masked attention path is exported too
TINY_SWIN = {"backbone": "swin", "backbone_kwargs": {"embed_dim": 16, "depths": [2, 2, 2, 2],
                                                     "num_heads": [1, 2, 2, 4], "window_size": 4,
                                                     "drop_path_rate": 0.0}}
EFN_VOCAB = [PAD, UNK, "the", "man", "on", "left", "a", "big", "white", "dog", "red", "circle"]
EFN_TINY = {"input_size": 64, "embed_dim": 16, "word_dim": 16, "gru_dim": 8, "fusion_dim": 16, "coattn_dim": 8,
            "decoder_dims": [16, 16, 8, 8], "pretrained_backbone": False, "pretrained_text": False,
            "backbone_kwargs": {"drop_path_rate": 0.0}, "vocab": EFN_VOCAB}
REID_TINY = {"num_ids": 4, "pretrained_backbone": False, "pretrained_text": False, "image_size": (32, 16),
             "embed_dim": 16}

pytestmark = pytest.mark.usefixtures("one_thread")


def graph_inputs(path) -> dict[str, list]:
    """name -> dims of the graph's inputs (a str for a dynamic axis, an int for a fixed one)."""
    graph = onnx.load(str(path)).graph
    return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}


def test_alignformer_onnx_matches_pytorch_with_dynamic_batch_and_tokens(bert_dir, tmp_path, capsys):
    torch.manual_seed(0)
    folder = save_pretrained(build_model("alignformer_lite", text_dir=bert_dir, **TINY), tmp_path / "model")
    out = tmp_path / "model.onnx"
    assert main(["export", "onnx", "--weights", str(folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "image size fixed 64x64" in printed and "max |difference|" in printed

    inputs = graph_inputs(out)
    assert list(inputs) == ["image", "tokens", "token_mask"]
    assert inputs["image"][1:] == [3, 64, 64] and isinstance(inputs["image"][0], str)  # dynamic batch
    assert isinstance(inputs["tokens"][1], str)  # dynamic token count

    model = from_pretrained(folder)
    text = model.tokenize(["the dog", "a man in a red shirt on the left", "the white circle", "left"])
    image = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    got = onnxruntime_session(out).run(None, {"image": image.numpy(), "tokens": text["tokens"].numpy(),
                                              "token_mask": text["token_mask"].numpy()})[0]
    with torch.no_grad():
        expected = model(image, text["tokens"], text["token_mask"])["logits"].numpy()
    assert got.shape == (4, 64, 64)
    assert np.abs(got - expected).max() <= DEFAULT_ATOL
    assert np.abs(expected).max() > 10 * DEFAULT_ATOL  # the comparison is not between two near-zero maps


def test_export_refuses_a_folder_that_is_not_a_model(tmp_path, capsys):
    assert main(["export", "onnx", "--weights", str(tmp_path), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "not a vlalign model folder" in capsys.readouterr().err


def _run_both(model, session, batch: int, height: int, width: int, texts=None):
    image = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(batch))
    if texts is None:  # the re-id image encoder
        with torch.no_grad():
            return session.run(None, {"image": image.numpy()})[0], model.extract(image).numpy()
    text = model.tokenize(texts[:batch])
    got = session.run(None, {"image": image.numpy(), "tokens": text["tokens"].numpy(),
                             "token_mask": text["token_mask"].numpy()})[0]
    with torch.no_grad():
        return got, model(image, text["tokens"], text["token_mask"])["logits"].numpy()


def test_efn_onnx_matches_pytorch_with_dynamic_batch_and_tokens(tmp_path, capsys):
    torch.manual_seed(0)
    folder = save_pretrained(build_model("efn_lite", **EFN_TINY), tmp_path / "efn")
    out = tmp_path / "efn.onnx"
    assert main(["export", "onnx", "--weights", str(folder), "--out", str(out)]) == 0
    assert "image size fixed 64x64" in capsys.readouterr().out
    inputs = graph_inputs(out)
    assert list(inputs) == ["image", "tokens", "token_mask"]
    assert inputs["image"][1:] == [3, 64, 64] and isinstance(inputs["image"][0], str)

    model, session = from_pretrained(folder), onnxruntime_session(out)
    texts = ["the big white dog on the left", "a red circle", "the man"]  # padding in the batch
    for batch in (1, 3):
        got, expected = _run_both(model, session, batch, 64, 64, texts)
        assert got.shape == (batch, 64, 64)
        assert np.abs(got - expected).max() <= DEFAULT_ATOL
        assert np.abs(expected).max() > 10 * DEFAULT_ATOL


def test_reid_image_encoder_onnx_matches_pytorch_with_dynamic_batch(bert_dir, tmp_path, capsys):
    from vlalign.models.reid import clip4vireid_lite

    torch.manual_seed(0)
    folder = save_pretrained(clip4vireid_lite(text_dir=bert_dir, **REID_TINY), tmp_path / "reid")
    out = tmp_path / "reid.onnx"
    assert main(["export", "onnx", "--weights", str(folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "inputs image;" in printed and "image size fixed 32x16" in printed
    assert graph_inputs(out)["image"][1:] == [3, 32, 16]

    model, session = from_pretrained(folder).eval(), onnxruntime_session(out)
    for batch in (1, 3):
        got, expected = _run_both(model, session, batch, 32, 16)
        assert got.shape == expected.shape and got.shape[0] == batch
        assert np.abs(got - expected).max() <= 1e-4  # unit-norm features: a tighter bound than on logits
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_alignformer_swin_onnx_matches_pytorch_at_its_fixed_size(bert_dir, tmp_path):
    torch.manual_seed(0)
    model = build_model("alignformer_swin_t", text_dir=bert_dir, **{**TINY, **TINY_SWIN})
    report = export_onnx(model, tmp_path / "swin.onnx", batch=2)  # verified on a batch of 3 inside
    assert report.kind == "referring" and not report.dynamic_size and report.image_size == (64, 64)
    assert report.max_abs_diff <= DEFAULT_ATOL
    got, expected = _run_both(model, onnxruntime_session(report.path), 1, 64, 64, ["the small white dog"])
    assert got.shape == (1, 64, 64) and np.abs(got - expected).max() <= DEFAULT_ATOL
    assert np.abs(expected).max() > 10 * DEFAULT_ATOL


# ---- the traceable stand-ins, against the originals (no ONNX) --------------------------------------------


def test_padded_gru_and_dense_heads_give_efn_the_same_numbers():
    torch.manual_seed(0)
    model = build_model("efn_lite", **EFN_TINY).eval()
    text = model.tokenize(["the big white dog on the left", "a dog", "man"])  # lengths 7, 2, 1: padding
    with torch.no_grad():
        words, sentence = model.text_encoder(text["tokens"], text["token_mask"])
        words2, sentence2 = _PaddedGRU(model.text_encoder)(text["tokens"], text["token_mask"])
        torch.testing.assert_close(words2, words)
        torch.testing.assert_close(sentence2, sentence, atol=1e-6, rtol=1e-5)
        stages, sent = model.language(words, sentence, text["token_mask"])
        stages2, sent2 = _DenseLanguageHeads(model.language)(words, sentence, text["token_mask"])
    torch.testing.assert_close(sent2, sent)
    for a, b in zip(stages2, stages):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
        assert (a[2, 1:] == 0).all()  # padded positions stay zero


@pytest.mark.parametrize("shifted", [False, True])
def test_window_attention_matches_the_per_window_formula(shifted):
    """softmax(q k^T / sqrt(hd) + relative bias [+ shift mask]) v in each window, as the official code writes it."""
    torch.manual_seed(0)
    window, heads, dim, B, nW = 4, 2, 8, 2, 4
    attn = WindowAttention(dim, heads, window).eval()
    x = torch.randn(B, nW, window * window, dim)
    mask = shifted_window_mask(2 * window, 2 * window, window, window // 2, x.device) if shifted else None
    with torch.no_grad():
        got = attn(x, mask)
        N, hd = window * window, dim // heads
        q, k, v = attn.qkv(x).view(B, nW, N, 3, heads, hd).permute(3, 0, 1, 4, 2, 5)  # (B, nW, nH, N, hd)
        bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)].view(N, N, heads)
        logits = q @ k.transpose(-1, -2) * hd**-0.5 + bias.permute(2, 0, 1)
        if shifted:
            logits = logits + mask  # (nW, 1, N, N)
        expected = attn.proj((F.softmax(logits, -1) @ v).transpose(2, 3).reshape(B, nW, N, dim))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
