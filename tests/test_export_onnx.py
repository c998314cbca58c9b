"""ONNX export: `vlalign export onnx` on a tiny AlignFormer folder; onnxruntime matches PyTorch within the stated
tolerance on a batch size and token count other than the traced ones (dynamic axes), the graph's inputs are
the documented ones, and eager PyTorch still works after the export (no tracer state left behind)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlalign.cli import main
from vlalign.export_onnx import DEFAULT_ATOL, onnxruntime_session
from vlalign.models.pretrained import build_model, from_pretrained, save_pretrained

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# alignformer_lite (EfficientNet-Lite0, random weights): the Swin variants do not export (vlalign/export_onnx.py)
TINY = {"input_size": 64, "pixel_dim": 16, "pixel_layers": 1, "pixel_heads": 2, "pixel_ffn_dim": 16,
        "word_ffn_dim": 16, "query_dim": 16, "query_layers": 1, "query_heads": 2, "query_ffn_dim": 16,
        "mask_dim": 8, "pretrained_backbone": False, "pretrained_text": False}

pytestmark = pytest.mark.usefixtures("one_thread")


def test_alignformer_onnx_matches_pytorch_with_dynamic_batch_and_tokens(bert_dir, tmp_path, capsys):
    torch.manual_seed(0)
    folder = save_pretrained(build_model("alignformer_lite", text_dir=bert_dir, **TINY), tmp_path / "model")
    out = tmp_path / "model.onnx"
    assert main(["export", "onnx", "--weights", str(folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "image size fixed 64x64" in printed and "max |difference|" in printed

    graph = onnx.load(str(out)).graph
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
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
