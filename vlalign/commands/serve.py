"""`vlalign serve`: the local web demo (front-end only, see vlalign/serve/)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from vlalign.serve.limits import Limits

    d = Limits()
    p = sub.add_parser("serve", help="local web demo: image / video referring segmentation and re-id search")
    p.add_argument("--weights", nargs="*", default=None,
                   help="model folders to offer (default: runs/demo/model, written by `make demo`, if present)")
    p.add_argument("--models-root", default="runs", help="also offer every model folder found under this folder "
                   "('' for none)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb)
    p.add_argument("--max-image-side", type=int, default=d.max_image_side, help="longest image side in pixels")
    p.add_argument("--max-video-seconds", type=float, default=d.max_video_seconds)
    p.add_argument("--max-video-frames", type=int, default=d.max_video_frames)
    p.add_argument("--max-expressions", type=int, default=d.max_expressions)
    p.add_argument("--concurrency", type=int, default=d.concurrency, help="model calls running at once")
    p.add_argument("--queue-size", type=int, default=d.queue_size, help="requests waiting at most")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    from vlalign.commands.models import cpu_setup
    from vlalign.serve.app import build_app, launch
    from vlalign.serve.limits import Limits

    cpu_setup()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    limits = Limits(max_upload_mb=args.max_upload_mb, max_image_side=args.max_image_side,
                    max_video_seconds=args.max_video_seconds, max_video_frames=args.max_video_frames,
                    max_expressions=args.max_expressions, concurrency=args.concurrency, queue_size=args.queue_size)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: anyone who can reach this address can use the demo")
    app = build_app(args.weights, models_root=args.models_root or None, limits=limits)
    launch(app, host=args.host, port=args.port, limits=limits)
    return 0
