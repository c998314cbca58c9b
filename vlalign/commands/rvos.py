"""`vlalign rvos train | eval` and `vlalign predict-video` for referring video segmentation (front-end only)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from vlalign.commands.models import _overrides, cpu_setup


def register(sub: argparse._SubParsersAction) -> None:
    rvos = sub.add_parser("rvos", help="referring video segmentation: train / eval on Ref-YouTube-VOS layout")
    tasks = rvos.add_subparsers(dest="task", required=True)

    p = tasks.add_parser("train", help="train a clip model (run under torchrun for several processes)")
    p.add_argument("model", help="builder name, e.g. twostream_lite")
    p.add_argument("--data", required=True, help="Ref-YouTube-VOS-layout folder (meta_expressions/, train/)")
    p.add_argument("--out", required=True, help="run folder; the trained model goes to OUT/model")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--iters", type=int, default=None)
    length.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=4, help="global batch of clips (all processes)")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=None, help="default: the model's recipe")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--schedule", default="poly", choices=["poly", "cosine", "step", "constant"])
    p.add_argument("--warmup", type=int, default=0, help="warm-up iterations")
    p.add_argument("--clip-grad", type=float, default=None)
    p.add_argument("--frame-stride", type=int, default=1, help="frames between the frames of a training clip")
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--eval-expressions", type=int, default=60, help="valid expressions scored during training")
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue OUT/checkpoints/latest exactly")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="model config overrides, e.g. --set num_frames=1 lmdf=false")
    p.add_argument("--no-final-eval", action="store_true")
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
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--device", default=None)
    p.set_defaults(func=_predict_video)


def _train(args) -> int:
    cpu_setup()
    from vlalign import rvos
    from vlalign.data.ytvos import RefYTVOS
    from vlalign.engine import TrainConfig
    from vlalign.models.pretrained import build_model, save_pretrained
    from vlalign.refseg import write_json

    model = build_model(args.model, **_overrides(args.set))
    if args.iters is None and args.epochs is None:
        args.epochs = 1
    config = TrainConfig(
        out_dir=args.out, max_iters=args.iters, epochs=args.epochs, batch_size=args.batch_size,
        grad_accum=args.grad_accum, lr=args.lr or model.config.lr, weight_decay=args.weight_decay,
        schedule=args.schedule, warmup_iters=args.warmup, clip_grad=args.clip_grad, eval_every=args.eval_every,
        save_every=args.save_every, num_workers=args.workers, device=args.device, seed=args.seed,
        resume=args.resume)
    summary = rvos.train_rvos(model, args.data, config, seed=args.seed, frame_stride=args.frame_stride,
                              eval_expressions=args.eval_expressions)
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
