"""Speed of referring video segmentation on this machine: frames per second of the two-stream model (paper scale
and lite) through the sliding-window VideoSegmenter, peak memory on a long video, and the J&F scorer against a
straightforward per-frame scikit-image implementation.

    .venv/bin/python benchmarks/speed_rvos.py --write          # -> benchmarks/results/speed_rvos.md
    .venv/bin/python benchmarks/speed_rvos.py --frames 12 --long-frames 40 --jf-frames 5 --skip-paper-scale

Random weights (speed does not depend on them); paper scale uses a BERT-base-shaped random text encoder.
fps = video frames segmented per second for one expression, everything included (resize, windows of the model's
clip length every ceil(T/2) frames, upsampling and thresholding at the frame's size). Memory: peak RSS of the
process after a short video and after the long one (same resolution): a sliding window that holds only its
window keeps them equal.
"""

from __future__ import annotations

import argparse
import math
import platform
import resource
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))  # speed_alignformer's helpers, when imported from elsewhere
from report import publish  # noqa: E402
from speed_alignformer import bert_base_dir, matmul_peak  # noqa: E402

from vlalign.metrics.vos import bound_pixels, boundary_f, region_similarity  # noqa: E402
from vlalign.models.pretrained import build_model  # noqa: E402
from vlalign.video_predictor import VideoSegmenter  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "speed_rvos.md"
EXPRESSION = "the square moving to the left"


def frames(n: int, height: int, width: int):
    """n RGB uint8 frames with a moving square (decoded frames stand-in), generated one at a time."""
    for i in range(n):
        frame = np.full((height, width, 3), 90, dtype=np.uint8)
        x = (7 * i) % (width - 60)
        frame[height // 3 : height // 3 + 60, x : x + 60] = (220, 40, 40)
        yield frame


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def video_fps(model, n: int, height: int, width: int) -> tuple[float, int]:
    seg = VideoSegmenter(model)
    list(seg.stream(frames(seg.window, height, width), [EXPRESSION]))  # warm-up
    tic = time.perf_counter()
    count = sum(1 for _ in seg.stream(frames(n, height, width), [EXPRESSION]))
    return count / (time.perf_counter() - tic), seg.max_held


def long_video_memory(model, args) -> tuple:
    """Peak RSS after a short video, then after the long one (same frames): (short, MiB, long, MiB, s, held)."""
    seg = VideoSegmenter(model)
    short = max(2 * model.config.num_frames, args.long_frames // 20)
    sum(1 for _ in seg.stream(frames(short, args.height, args.width), [EXPRESSION]))
    rss_short = peak_rss_mib()
    tic = time.perf_counter()
    count = sum(1 for _ in seg.stream(frames(args.long_frames, args.height, args.width), [EXPRESSION]))
    return short, rss_short, count, peak_rss_mib(), time.perf_counter() - tic, seg.max_held


def train_step(model, batch: int, repeats: int = 2) -> float:
    size, t = model.config.input_size, model.config.num_frames
    tok = model.tokenize([EXPRESSION] * batch)
    clip, masks = torch.rand(batch, t, 3, size, size), (torch.rand(batch, t, size, size) > 0.7).float()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()
    times = []
    for _ in range(repeats + 1):
        tic = time.perf_counter()
        out = model(clip, tok["tokens"], tok["token_mask"], masks=masks)
        sum(v for k, v in out.items() if k.startswith("loss_")).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - tic)
    model.eval()
    return float(np.median(times[1:]))


# ------------------------------------------------------------------------------- the straightforward scorer
def naive_seg2bmap(mask: np.ndarray) -> np.ndarray:
    """The official boundary rule written plainly on one frame."""
    m = mask.astype(bool)
    e, s, se = np.zeros_like(m), np.zeros_like(m), np.zeros_like(m)
    e[:, :-1], s[:-1, :], se[:-1, :-1] = m[:, 1:], m[1:, :], m[1:, 1:]
    b = (m ^ e) | (m ^ s) | (m ^ se)
    b[-1, :], b[:, -1] = (m ^ e)[-1, :], (m ^ s)[:, -1]
    b[-1, -1] = False
    return b


def naive_jf(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame loop: J with numpy, F with skimage dilation by a disk on full frames."""
    from skimage.morphology import dilation, disk

    j, f = np.zeros(len(gt)), np.zeros(len(gt))
    for t, (g, p) in enumerate(zip(gt, pred)):
        union = np.logical_or(g, p).sum()
        j[t] = 1.0 if union == 0 else np.logical_and(g, p).sum() / union
        radius = math.ceil(0.008 * np.linalg.norm(g.shape))
        gb, pb = naive_seg2bmap(g), naive_seg2bmap(p)
        g_dil, p_dil = dilation(gb, disk(radius)), dilation(pb, disk(radius))
        n_p, n_g = pb.sum(), gb.sum()
        if n_p == 0 and n_g == 0:
            precision = recall = 1.0
        elif n_p == 0:
            precision, recall = 1.0, 0.0
        elif n_g == 0:
            precision, recall = 0.0, 1.0
        else:
            precision, recall = (pb & g_dil).sum() / n_p, (gb & p_dil).sum() / n_g
        f[t] = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return j, f


def scorer_speed(n: int, height: int = 480, width: int = 854) -> dict:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:height, :width]
    gt, pred = np.zeros((n, height, width), bool), np.zeros((n, height, width), bool)
    for t in range(n):  # an ellipse-ish object and a prediction that is off by a few pixels
        cy, cx, ry, rx = rng.integers(120, 360), rng.integers(200, 650), rng.integers(30, 110), rng.integers(30, 150)
        gt[t] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        pred[t] = ((yy - cy - rng.integers(-6, 7)) / ry) ** 2 + ((xx - cx - rng.integers(-6, 7)) / (rx + 5)) ** 2 <= 1
    tic = time.perf_counter()
    j_fast, f_fast = region_similarity(gt, pred), boundary_f(gt, pred)
    fast = time.perf_counter() - tic
    tic = time.perf_counter()
    j_ref, f_ref = naive_jf(gt, pred)
    naive = time.perf_counter() - tic
    return {"frames": n, "size": (height, width), "radius": bound_pixels((height, width)), "ours_s": fast,
            "naive_s": naive, "max_diff": float(max(np.abs(j_fast - j_ref).max(), np.abs(f_fast - f_ref).max()))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--frames", type=int, default=60, help="frames timed for fps")
    p.add_argument("--long-frames", type=int, default=1000, help="the long video of the memory check")
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--jf-frames", type=int, default=100, help="480x854 frames scored by both J&F implementations")
    p.add_argument("--skip-paper-scale", action="store_true")
    p.add_argument("--write", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # before the first parallel op (shared/docs/performance.md)
    peak = matmul_peak()
    variants = [("twostream_lite", {"pretrained_backbone": False, "pretrained_text": False}, 4)]
    if not args.skip_paper_scale:  # after lite: the process-wide peak RSS of the memory check must be lite's
        variants.append(("twostream_r101", {"text_dir": bert_base_dir(), "pretrained_text": False}, 1))
    rows, memory = [], None
    for name, overrides, step_batch in variants:
        model = build_model(name, **overrides).eval()
        params = sum(q.numel() for q in model.parameters()) / 1e6
        fps, _ = video_fps(model, args.frames, args.height, args.width)
        if memory is None:
            memory = long_video_memory(model, args)
        step = train_step(model, step_batch)
        rows.append((name, model.config.input_size, model.config.num_frames, params, fps, step, step_batch))
        print(rows[-1], flush=True)
        del model
    short, rss_short, count, rss_long, long_s, held = memory
    jf = scorer_speed(args.jf_frames)
    print(jf, flush=True)

    lines = ["| model | input | clip T | params (M) | video fps (1 expression) | train step (s) |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {n} | {s}x{s} | {t} | {pm:.1f} | {f:.2f} | {st:.2f} (b={b} clips) |"
              for n, s, t, pm, f, st, b in rows]
    text = (f"# Referring video segmentation speed on this machine\n\nMeasured {date.today()} on "
            f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads, torch "
            f"{torch.__version__}, flush-to-zero on), random weights, fp32; matmul peak in the same process "
            f"{peak:.0f} GFLOP/s. Frames {args.width}x{args.height}, sliding window of the model's clip length, "
            f"stride ceil(T/2).\n\nReproduce: `.venv/bin/python benchmarks/speed_rvos.py "
            f"{' '.join(argv if argv is not None else sys.argv[1:])}`\n\n" + "\n".join(lines) + "\n\n"
            f"## Memory on a long video (twostream_lite)\n\n| video | frames | peak RSS (MiB) |\n|---|---:|---:|\n"
            f"| short | {short} | {rss_short:.0f} |\n| long | {count} | {rss_long:.0f} |\n\n"
            f"The long video took {long_s:.0f} s ({count / long_s:.1f} fps); the segmenter held at most "
            f"{held} frames at once (resized window + pending predictions).\n\n"
            f"## J&F scorer\n\n{jf['frames']} frames of {jf['size'][1]}x{jf['size'][0]} (F tolerance {jf['radius']}"
            f" px), one object: `vlalign.metrics.vos` (region_similarity + boundary_f) {jf['ours_s']:.3f} s vs a "
            f"per-frame loop with skimage `dilation(disk)` on full frames {jf['naive_s']:.3f} s: "
            f"{jf['naive_s'] / jf['ours_s']:.1f}x faster; largest difference of any J or F value "
            f"{jf['max_diff']:.1e}.\n")
    publish(text, RESULTS.name, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
