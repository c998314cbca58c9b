"""`vlalign rvos train | eval` and `vlalign predict-video` for referring video segmentation (front-end only)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from vlalign.commands.models import _overrides, add_train_options, cpu_setup, train_config


def register(sub: argparse._SubParsersAction) -> None:
    rvos = sub.add_parser("rvos", help="referring video segmentation: train / eval on Ref-YouTube-VOS layout")
    tasks = rvos.add_subparsers(dest="task", required=True)

    p = tasks.add_parser("train", help="train a clip model (run under torchrun for several processes)")
    p.add_argument("model", help="builder name, e.g. twostream_lite")
    p.add_argument("--data", required=True, help="Ref-YouTube-VOS-layout folder (meta_expressions/, train/)")
    p.add_argument("--out", required=True, help="run folder; the trained model goes to OUT/model")
    add_train_options(p, batch_size=4, batch_help="global batch of clips (all processes)",
                      set_example="num_frames=1 lmdf=false")
    p.add_argument("--frame-stride", type=int, default=None,
                   help="frames between a clip's frames (default: the model config's frame_stride); stored in the "
                        "model, so inference uses the same spacing")
    p.add_argument("--eval-expressions", type=int, default=60, help="valid expressions scored during training")
    p.set_defaults(func=_train)

    p = tasks.add_parser("eval", help="predict a split into the submission layout and score J&F offline")
    p.add_argument("--weights", required=True, help="model folder (config.json + model.safetensors)")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="valid", choices=["train", "valid", "test"])
    p.add_argument("--pred", default=None, help="prediction folder (default: WEIGHTS/../<split>_pred)")
    p.add_argument("--stride", type=int, default=None, help="frames between sliding windows (default T/2)")
    p.add_argument("--json", default=None, help="write the metrics here")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_eval)

    p = sub.add_parser("predict-video", help="segment what expressions refer to in a video (overlay video)")
    p.add_argument("video")
    p.add_argument("expressions", nargs="+")
    p.add_argument("--weights", required=True)
    p.add_argument("--out", required=True, help="overlay video (.mp4), one colour per expression")
    p.add_argument("--masks", default=None, help="also write 0/255 PNG masks to MASKS/<k>/<frame>.png")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--stride", type=int, default=None, help="frames between sliding windows (default T/2)")
    p.add_argument("--max-frames", type=int, default=None, help="segment only the first N frames")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_predict_video)


def _train(args) -> int:
    cpu_setup()
    from vlalign import rvos
    from vlalign.data.ytvos import RefYTVOS
    from vlalign.models.pretrained import build_model, save_pretrained
    from vlalign.refseg import write_json

    overrides = _overrides(args.set)
    if args.frame_stride is not None:
        overrides["frame_stride"] = args.frame_stride
    model = build_model(args.model, **overrides)
    config = train_config(args, model)
    summary = rvos.train_rvos(model, args.data, config, seed=args.seed, eval_expressions=args.eval_expressions)
    if int(os.environ.get("RANK", "0")) != 0:  # the engine has closed the process group: rank 0 finishes
        return 0
    model_dir = Path(args.out) / "model"
    save_pretrained(model, model_dir)
    print(f"model written to {model_dir}")
    if not args.no_final_eval:
        valid = RefYTVOS(args.data, "valid")
        result = rvos.evaluate_rvos(model, valid, info=rvos.load_synth_info(args.data))
        write_json(Path(args.out) / "results.json", {"results": {"valid": result}, "train": summary})
        print(rvos.jf_table({"valid": result}))
        from vlalign.hub import update_model_card

        update_model_card(model_dir, metrics={"valid": {k: v for k, v in result.items() if isinstance(v, float)}})
    return 0


def _eval(args) -> int:
    cpu_setup()
    from vlalign import rvos
    from vlalign.data.ytvos import RefYTVOS
    from vlalign.models.pretrained import from_pretrained
    from vlalign.refseg import write_json
    from vlalign.video_predictor import VideoSegmenter

    model = from_pretrained(args.weights, map_location=args.device or "cpu")
    reader = RefYTVOS(args.data, args.split)
    pred = Path(args.pred) if args.pred else Path(args.weights).resolve().parent / f"{args.split}_pred"
    segmenter = VideoSegmenter(model, stride=args.stride, device=args.device)
    count = sum(1 for _ in rvos.predict_expressions(segmenter, reader, pred_dir=pred))
    print(f"{count} masks written to {pred / 'Annotations'}")
    if not reader.has_annotations or not any(e.obj_id is not None for e in reader.expressions):
        print(f"split {args.split!r} has no ground truth: zip {pred / 'Annotations'} and submit it")
        return 0
    result = rvos.score_predictions(reader, args.data, pred, info=rvos.load_synth_info(args.data))
    print(rvos.jf_table({args.split: result}))
    if args.json:
        write_json(args.json, result)
    return 0


def _predict_video(args) -> int:
    cpu_setup()
    from vlalign.video_predictor import VideoSegmenter, predict_video

    segmenter = VideoSegmenter.from_pretrained(args.weights, device=args.device, stride=args.stride)
    summary = predict_video(args.video, args.expressions, args.out, segmenter=segmenter, threshold=args.threshold,
                            max_frames=args.max_frames, masks_dir=args.masks)
    print(json.dumps(summary, indent=2))
    return 0
