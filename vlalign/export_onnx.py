"""ONNX export of the referring segmenters (AlignFormer, EFN) and the re-id image encoder.

    vlalign export onnx --weights runs/demo/model --out model.onnx

Referring segmenters: inputs `image` (B, 3, H, W) float32 in [0, 1] (the model normalises inside), `tokens`
(B, L) int64 and `token_mask` (B, L) bool; output `logits` (B, H, W) at the input resolution. The tokenizer
stays in Python: it is the folder's own (`text/` for BERT-family encoders, the word list in config.json for
EFN's GRU); run `model.tokenize(sentences)` (or any tokenizer that reproduces it) and feed its two tensors.
Batch B and token count L (up to the model's `max_tokens`) are dynamic. The image size:
- AlignFormer: fixed to the model's square `input_size`. Its deformable attention lays the feature levels out
  on one canvas whose gather index is built in Python from the feature-map sizes
  (`ms_deform_attn._canvas_layout`); traced, the index is a constant of one size. The models are trained and
  used at that one size anyway: `ReferringSegmenter` resizes every image to it (ResizeSquare).
  AlignFormers with a Swin backbone (`alignformer_swin_b/t`) do not export yet: Swin's window attention calls
  scaled_dot_product_attention on 5-D tensors, which onnxscript's converter refuses (4-D only);
  `alignformer_lite` (EfficientNet-Lite0) exports.
- EFN: dynamic height and width (multiples of 32: the backbone's stride); trained at `input_size`, so other
  sizes are possible but not what it learned.
Re-id image encoder: input `image` (B, 3, H, W) float32 in [0, 1] at the model's input size, output `features`
(B, D), the L2-normalised test feature (what `vlalign.reid.extract_features` computes); dynamic batch.

The exporter is torch's dynamo-based one (`torch.export` + onnxscript), without its graph optimisation pass
(slow, and onnxruntime optimises the graph itself when it loads it). The older TorchScript tracer gives wrong
numbers on these models (measured: the text encoder and backbone outputs already differ), so it is not used.
`verify` runs the exported graph with onnxruntime on a batch and token count other than the traced ones and
compares with PyTorch: max |difference| of the outputs <= `atol` (default 1e-2 on logits; measured ~1.4e-3
for a tiny AlignFormer whose logits reach ~1, from float32 reordering in the deformable sampling).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["DEFAULT_ATOL", "ExportReport", "export_onnx", "export_model_folder", "onnxruntime_session"]

DEFAULT_ATOL = 1e-2
OPSET = 18  # the dynamo exporter's own opset; onnxruntime >= 1.16


@dataclass
class ExportReport:
    path: str
    kind: str  # "referring" | "reid"
    inputs: list[str]
    dynamic: dict[str, dict[int, str]]
    image_size: tuple[int, int]  # the traced size (the fixed one where the size is not dynamic)
    dynamic_size: bool
    max_abs_diff: float | None = None  # onnxruntime vs PyTorch on the verification batch


class _Logits(nn.Module):
    """A referring segmenter as a tensor-in / tensor-out graph: (image, tokens, token_mask) -> logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image, tokens, token_mask):
        return self.model(image, tokens, token_mask.bool())["logits"]


class _ReidFeatures(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image):
        return self.model.encode_image(image)


def _is_reid(model: nn.Module) -> bool:
    return hasattr(model, "encode_image") and not hasattr(model, "tokenize")


def dynamic_size_supported(model: nn.Module) -> bool:
    """Whether the exported graph can take other image sizes than the traced one (see the module docstring)."""
    name = getattr(model.config, "name", "")
    return name.startswith("efn")


@contextlib.contextmanager
def _export_mode():
    """Trace with fresh shape caches, and leave none behind that the trace made: the deformable attention's
    lru_cache would otherwise keep the tracer's fake tensors and break the next eager forward."""
    from vlalign.models.alignformer import ms_deform_attn

    ms_deform_attn._canvas_layout.cache_clear()
    try:
        with warnings.catch_warnings():
            # the tracer's notes on Python ints/bools taken from shapes: the docstring says which are constant
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            yield
    finally:
        ms_deform_attn._canvas_layout.cache_clear()


def _example_text(model: nn.Module, count: int) -> dict[str, torch.Tensor]:
    sentences = ["the man on the left in a red shirt", "a small white dog", "the second square from the right",
                 "big green circle"]
    return model.tokenize([sentences[i % len(sentences)] for i in range(count)])


def export_onnx(model: nn.Module, out: str | Path, *, batch: int = 2, image_size: int | None = None,
                opset: int = OPSET, verify: bool = True, atol: float = DEFAULT_ATOL) -> ExportReport:
    """Export `model` (a referring segmenter or a re-id model) to `out`; see the module docstring."""
    model = model.eval().cpu()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    size = int(image_size or model.config.input_size) if not _is_reid(model) else None
    batch_dim = torch.export.Dim("batch", min=1, max=4096)
    if _is_reid(model):
        h, w = _reid_size(model)
        wrapper, names, outputs = _ReidFeatures(model), ["image"], ["features"]
        example = (torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(0)),)
        shapes: dict = {"image": {0: batch_dim}}
        dyn_size, kind = False, "reid"
    else:
        h = w = size
        wrapper, names, outputs = _Logits(model), ["image", "tokens", "token_mask"], ["logits"]
        text = _example_text(model, batch)
        example = (torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(0)), text["tokens"],
                   text["token_mask"])
        dyn_size, kind = dynamic_size_supported(model), "referring"
        tokens_dim = torch.export.Dim("tokens", min=1, max=int(model.config.max_tokens))
        image_axes = {0: batch_dim}
        if dyn_size:  # multiples of 32 (the backbone's stride), from 64 to 2048 pixels
            image_axes.update({2: 32 * torch.export.Dim("height32", min=2, max=64),
                               3: 32 * torch.export.Dim("width32", min=2, max=64)})
        shapes = {"image": image_axes, "tokens": {0: batch_dim, 1: tokens_dim},
                  "token_mask": {0: batch_dim, 1: tokens_dim}}
    wrapper.eval()
    with _export_mode(), torch.no_grad():
        torch.onnx.export(wrapper, example, str(out), input_names=names, output_names=outputs,
                          dynamic_shapes=shapes, opset_version=opset, dynamo=True, optimize=False,
                          verbose=False, external_data=False)
    dynamic = {name: {axis: str(dim) for axis, dim in axes.items()} for name, axes in shapes.items()}
    report = ExportReport(str(out), kind, names, dynamic, (h, w), dyn_size)
    if verify:
        report.max_abs_diff = verify_onnx(model, out, report, batch=batch + 1)
        if not report.max_abs_diff <= atol:
            raise RuntimeError(f"{out}: onnxruntime and PyTorch differ by {report.max_abs_diff:.3g} (> {atol}); "
                               f"the export is not faithful")
    return report


def _reid_size(model: nn.Module) -> tuple[int, int]:
    size = getattr(model.config, "input_size", None) or (256, 128)
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def onnxruntime_session(path: str | Path):
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError("checking an export needs onnxruntime: pip install 'vlalign[export]'") from e
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its graph-rewrite notes are not for users
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@torch.no_grad()
def verify_onnx(model: nn.Module, path: str | Path, report: ExportReport, batch: int = 3) -> float:
    """Max |onnxruntime - PyTorch| on a fresh batch of `batch` (not the traced batch, nor its token count)."""
    session = onnxruntime_session(path)
    h, w = report.image_size
    if report.dynamic_size:
        h, w = h + 32, w - 32 if w > 64 else w + 64  # another size, still a multiple of the stride
    image = torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(1))
    if report.kind == "reid":
        feeds, expected = {"image": image.numpy()}, _ReidFeatures(model)(image)
    else:
        text = model.tokenize(["the dog", "a man in a red shirt on the left of the white square", "left"][:batch]
                              + ["the circle"] * max(0, batch - 3))
        feeds = {"image": image.numpy(), "tokens": text["tokens"].numpy(), "token_mask": text["token_mask"].numpy()}
        expected = _Logits(model)(image, text["tokens"], text["token_mask"])
    got = session.run(None, feeds)[0]
    if got.shape != tuple(expected.shape):
        raise RuntimeError(f"{path}: onnxruntime returned shape {got.shape}, PyTorch {tuple(expected.shape)}")
    return float(np.abs(got - expected.numpy()).max())


def export_model_folder(weights: str | Path, out: str | Path, **kwargs) -> ExportReport:
    """`export_onnx` of a model folder (local, or a Hub id: vlalign.models.pretrained.from_pretrained)."""
    from vlalign.models.pretrained import from_pretrained

    return export_onnx(from_pretrained(weights), out, **kwargs)
