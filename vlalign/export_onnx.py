"""ONNX export of the referring segmenters (AlignFormer, EFN) and the re-id image encoder.

    vlalign export onnx --weights runs/demo/model --out model.onnx

Referring segmenters: inputs `image` (B, 3, H, W) float32 in [0, 1] (the model normalises inside), `tokens`
(B, L) int64 and `token_mask` (B, L) bool; output `logits` (B, H, W) at the input resolution. The tokenizer
stays in Python: it is the folder's own (`text/` for BERT-family encoders, the word list in config.json for
EFN's GRU); run `model.tokenize(sentences)` (or any tokenizer that reproduces it) and feed its two tensors.
Batch B and token count L (up to the model's `max_tokens`) are dynamic. Re-id image encoder: input `image`
(B, 3, H, W) float32 in [0, 1], output `features` (B, C + D), the L2-normalised test feature (what
`vlalign.reid.extract_features` computes); dynamic batch.

The image size is fixed, for every model, to the size it is trained and used at (`input_size`, square, for the
segmenters; `image_size` (H, W) for re-id): resize first, as `ReferringSegmenter` (ResizeSquare) and
`extract_features` do. Why:
- AlignFormer (every backbone: `alignformer_lite`, `alignformer_swin_t/b`): its deformable attention lays the
  feature levels out on one canvas whose gather index is built in Python from the feature-map sizes
  (`ms_deform_attn._canvas_layout`), and Swin builds its window padding and shifted-window masks in Python
  from the input size; traced, both are constants of that one size.
- EFN and the re-id lite tower (EfficientNet-Lite0): the graph itself could take other sizes, but tracing them
  symbolically does not finish: the TF-"same" paddings (ceil / max of the size at every stride) grow
  expressions that torch.export's shape solver (sympy) works on for more than 15 minutes for a tiny model
  (measured; EFN's co-attention multiplies HW by HW on top), against ~30 s at a fixed size.
- CLIP ViT towers: their positional embeddings are resized to one grid.
EFN's GRU reads packed sequences in PyTorch, which torch.export cannot trace, and gathers its real tokens with
a boolean mask (a data-dependent size): the export swaps in stand-ins with the same weights and the same
numbers (`_PaddedGRU`: the forward direction read at each sentence's last word, the backward one run over
each sentence reversed within its length; `_DenseLanguageHeads`: the heads over every position, padding
zeroed after), then puts the originals back.

The exporter is torch's dynamo-based one (`torch.export` + onnxscript), without its graph optimisation pass
(slow, and onnxruntime optimises the graph itself when it loads it). The older TorchScript tracer gives wrong
numbers on these models (measured: the text encoder and backbone outputs already differ), so it is not used.
`verify` runs the exported graph with onnxruntime on a batch and token count other than the traced ones and
compares with PyTorch: max |difference| of the outputs <= `atol` (default 1e-2; measured with tiny random
models: ~1.4e-3 for an AlignFormer whose logits reach ~1, from float32 reordering in the deformable sampling;
~5e-7 for EFN; tests/test_export_onnx.py checks each family).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
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
    image_size: tuple[int, int]  # (H, W) the graph takes
    dynamic_size: bool  # False for every model today (see the module docstring); the CLI reports it
    max_abs_diff: float | None = None  # onnxruntime vs PyTorch on the verification batch


class _Logits(nn.Module):
    """A referring segmenter as a tensor-in / tensor-out graph: (image, tokens, token_mask) -> logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image, tokens, token_mask):
        return self.model(image, tokens, token_mask.bool())["logits"]


class _ReidFeatures(nn.Module):
    """A re-id model's image encoder as a graph: image -> the L2-normalised test feature."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image):
        return self.model.extract(image)


class _PaddedGRU(nn.Module):
    """EFN's GRU text encoder without packed sequences, which torch.export cannot trace; same weights, same numbers.

    Packed, the bidirectional GRU's sentence state is the forward direction after each sentence's last word and
    the backward direction after its first word, having started at the last one. On padded input a
    unidirectional GRU gives the former at position length - 1 (padding comes after it, so it cannot leak in);
    the backward weights, run forward over each sentence reversed within its length, give the latter there.
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder  # its embedding and word MLP, and tokenize for the caller
        gru = encoder.gru
        self.forward_gru = nn.GRU(gru.input_size, gru.hidden_size, batch_first=True)
        self.backward_gru = nn.GRU(gru.input_size, gru.hidden_size, batch_first=True)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            setattr(self.forward_gru, f"{name}_l0", getattr(gru, f"{name}_l0"))
            setattr(self.backward_gru, f"{name}_l0", getattr(gru, f"{name}_l0_reverse"))

    def tokenize(self, texts):
        return self.encoder.tokenize(texts)

    def forward(self, tokens, token_mask):
        """tokens (B, L), token_mask (B, L) bool, real tokens first -> (B, L, word_dim), (B, 2*hidden)."""
        words = self.encoder.mlp(self.encoder.embedding(tokens))  # (B, L, word_dim)
        lengths = token_mask.sum(1).clamp(min=1)[:, None]  # (B, 1), as pack_padded_sequence's lengths
        pos = torch.arange(tokens.shape[1], device=tokens.device)[None]  # (1, L)
        flipped = torch.where(pos < lengths, lengths - 1 - pos, pos)  # (B, L): reversed within each length
        reversed_words = words.gather(1, flipped[..., None].expand_as(words))
        last = (lengths - 1)[..., None].expand(-1, 1, self.forward_gru.hidden_size)  # (B, 1, hidden)
        h_forward = self.forward_gru(words)[0].gather(1, last)[:, 0]
        h_backward = self.backward_gru(reversed_words)[0].gather(1, last)[:, 0]
        return words, torch.cat([h_forward, h_backward], dim=-1)


class _DenseLanguageHeads(nn.Module):
    """EFN's language heads over every position, padding zeroed after: the same numbers in eval mode (BatchNorm
    then uses its running statistics, per token), without the boolean-mask gather whose data-dependent size
    torch.export cannot trace."""

    def __init__(self, heads: nn.Module):
        super().__init__()
        self.heads = heads

    def forward(self, words, sentence, token_mask):
        """words (B, L, Dw), sentence (B, Ds), token_mask (B, L) -> num_stages x (B, L, dim), (B, dim)."""
        if self.heads.training:
            raise RuntimeError("_DenseLanguageHeads matches LanguageHeads in eval mode only")
        B, L, _ = words.shape
        keep = token_mask[..., None].to(words.dtype)  # (B, L, 1)
        flat = self.heads.words(words.reshape(B * L, -1))  # (B*L, dim): BatchNorm1d wants (N, C)
        stages = [F.normalize(head(flat), dim=-1).view(B, L, -1) * keep for head in self.heads.stages]
        return stages, F.normalize(self.heads.sentence(sentence), dim=-1)


def _is_reid(model: nn.Module) -> bool:
    return hasattr(model, "extract") and hasattr(model.config, "image_size") and not hasattr(model, "tokenize")


@contextlib.contextmanager
def _traceable(model: nn.Module):
    """Swap in traceable equivalents of the parts torch.export cannot trace (EFN's packed GRU and its
    boolean-mask gather of real tokens), then put the originals back."""
    from vlalign.models.efn.text import GRUTextEncoder, LanguageHeads

    swaps = {"text_encoder": (GRUTextEncoder, _PaddedGRU), "language": (LanguageHeads, _DenseLanguageHeads)}
    originals = {}
    try:
        for name, (kind, replacement) in swaps.items():
            part = getattr(model, name, None)
            if isinstance(part, kind):
                originals[name] = part
                setattr(model, name, replacement(part))
        yield
    finally:
        for name, part in originals.items():
            setattr(model, name, part)


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
    batch_dim = torch.export.Dim("batch", min=1, max=4096)
    if _is_reid(model):
        h, w = (image_size, image_size) if image_size else _reid_size(model)
        wrapper, names, outputs, kind = _ReidFeatures(model), ["image"], ["features"], "reid"
        example: tuple = (torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(0)),)
    else:
        h = w = int(image_size or model.config.input_size)
        wrapper, names, outputs, kind = _Logits(model), ["image", "tokens", "token_mask"], ["logits"], "referring"
        text = _example_text(model, batch)
        example = (torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(0)), text["tokens"],
                   text["token_mask"])
    shapes: dict = {"image": {0: batch_dim}}  # the image size is fixed: see the module docstring
    if kind == "referring":
        tokens_dim = torch.export.Dim("tokens", min=1, max=int(model.config.max_tokens))
        shapes.update({"tokens": {0: batch_dim, 1: tokens_dim}, "token_mask": {0: batch_dim, 1: tokens_dim}})
    wrapper.eval()
    with _export_mode(), _traceable(model), torch.no_grad():
        torch.onnx.export(wrapper, example, str(out), input_names=names, output_names=outputs,
                          dynamic_shapes=shapes, opset_version=opset, dynamo=True, optimize=False,
                          verbose=False, external_data=False)
    dynamic = {name: {axis: str(dim) for axis, dim in axes.items()} for name, axes in shapes.items()}
    report = ExportReport(str(out), kind, names, dynamic, (h, w), dynamic_size=False)
    if verify:
        report.max_abs_diff = verify_onnx(model, out, report, batch=batch + 1)
        if not report.max_abs_diff <= atol:
            raise RuntimeError(f"{out}: onnxruntime and PyTorch differ by {report.max_abs_diff:.3g} (> {atol}); "
                               f"the export is not faithful")
    return report


def _reid_size(model: nn.Module) -> tuple[int, int]:
    h, w = model.config.image_size  # (H, W): what extract_features resizes every image to
    return int(h), int(w)


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
