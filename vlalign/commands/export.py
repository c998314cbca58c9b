"""`vlalign export onnx`: a model folder as an ONNX graph (front-end only, see vlalign/export_onnx.py)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("export", help="export a model folder (ONNX)")
    formats = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    p = formats.add_parser("onnx", help="referring segmenters (image, tokens, token_mask -> logits) and the re-id "
                           "image encoder (image -> features); the tokenizer stays in Python")
    p.add_argument("--weights", required=True, help="model folder (config.json + model.safetensors) or Hub id")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18, the exporter's own)")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime vs PyTorch comparison")
    p.add_argument("--atol", type=float, default=None, help="largest accepted |onnxruntime - PyTorch| (1e-2)")
    p.set_defaults(func=_onnx)


def _onnx(args) -> int:
    from vlalign.export_onnx import DEFAULT_ATOL, OPSET, export_model_folder

    report = export_model_folder(args.weights, args.out, opset=args.opset or OPSET, verify=not args.no_verify,
                                 atol=args.atol or DEFAULT_ATOL)
    h, w = report.image_size
    size = f"dynamic (traced at {h}x{w})" if report.dynamic_size else f"fixed {h}x{w}"
    print(f"wrote {report.path}: inputs {', '.join(report.inputs)}; batch dynamic; image size {size}")
    if not report.dynamic_size:
        print(f"the graph takes {h}x{w} images only: resize to it first (as ReferringSegmenter and "
              f"vlalign.reid.extract_features do); see vlalign/export_onnx.py for why")
    if report.max_abs_diff is not None:
        print(f"onnxruntime vs PyTorch: max |difference| {report.max_abs_diff:.2e} (tolerance "
              f"{args.atol or DEFAULT_ATOL:g})")
    if report.kind == "referring":
        print("tokens/token_mask: from the model's own tokenizer in Python, e.g. "
              "from_pretrained(WEIGHTS).tokenize([\"the dog on the left\"])")
    return 0
