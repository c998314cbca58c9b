"""Speed of referring video segmentation on this machine: frames per second of the two-stream model (paper scale
and lite) through the sliding-window VideoSegmenter, memory on a long video, and the J&F scorer against a
straightforward per-frame scikit-image implementation.

    .venv/bin/python benchmarks/speed_rvos.py --write          # -> benchmarks/results/speed_rvos.md (~5 min)
    .venv/bin/python benchmarks/speed_rvos.py --smoke          # a quick check that everything runs

Random weights (speed does not depend on them); paper scale uses a BERT-base-shaped random text encoder.
fps = video frames segmented per second for one expression, everything included (resize, windows of the model's
clip length every ceil(T/2) frames at the model's frame spacing, upsampling and thresholding at the frame's
size). Paper scale is timed on fewer frames (`--paper-frames`): it is far slower, and steady after a few windows.
Memory: the lite model over a short video, then a 1,000-frame one (same resolution) in the same process: the
peak RSS after each, and the RSS sampled along the long video; a sliding window that holds only its window keeps
them flat. The J&F scorer is checked against the plain loop (every J and F equal to 1e-9) before it is timed.
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

sys.path.insert(0, str(Path(__file__).parent))  # sibling modules, also when imported from elsewhere
from report import footer, publish, speed_args  # noqa: E402
from speed_alignformer import bert_base_dir, matmul_peak  # noqa: E402

from vlalign.metrics.vos import bound_pixels, boundary_f, region_similarity  # noqa: E402
from vlalign.models.pretrained import build_model  # noqa: E402
from vlalign.video_predictor import VideoSegmenter  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "speed_rvos.md"
SMOKE = {"frames": 9, "paper_frames": 6, "long_frames": 40, "jf_frames": 5}
EXPRESSION = "the square moving to the left"


def frames(n: int, height: int, width: int):
    """n RGB uint8 frames with a moving square (decoded frames stand-in), generated one at a time."""
    for i in range(n):
        frame = np.full((height, width, 3), 90, dtype=np.uint8)
        x = (7 * i) % (width - 60)
        frame[height // 3 : height // 3 + 60, x : x + 60] = (220, 40, 40)
        yield frame


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    """Resident memory now (VmRSS), NaN where /proc is not available."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return math.nan


def video_fps(model, n: int, height: int, width: int) -> float:
    """Frames per second over n frames, after one window of warm-up."""
    seg = VideoSegmenter(model)
    # a full window: with a frame spacing d (the model's frame_stride) a window spans (T - 1) d + 1 frames
    sum(1 for _ in seg.stream(frames((seg.window - 1) * seg.dilation + 1, height, width), [EXPRESSION]))
    tic = time.perf_counter()
    count = sum(1 for _ in seg.stream(frames(n, height, width), [EXPRESSION]))
    return count / (time.perf_counter() - tic)


def long_video_memory(model, n: int, height: int, width: int, samples: int = 5) -> dict:
    """Peak RSS after a short video, then after an n-frame one, with the RSS sampled along the long one."""
    seg = VideoSegmenter(model)
    short = max(2 * seg.window * seg.dilation, n // 20)
    sum(1 for _ in seg.stream(frames(short, height, width), [EXPRESSION]))
    peak_short, along = peak_rss_mib(), {}
    marks = {max(1, round(n * (k + 1) / samples)) - 1 for k in range(samples)}
    tic = time.perf_counter()
    count = 0
    for index, *_ in seg.stream(frames(n, height, width), [EXPRESSION]):
        count += 1
        if index in marks:
            along[index + 1] = rss_mib()
    return {"short": short, "peak_short": peak_short, "long": count, "peak_long": peak_rss_mib(),
            "along": along, "seconds": time.perf_counter() - tic, "held": seg.max_held,
            "dilation": seg.dilation}


def train_step(model, batch: int, repeats: int = 2) -> float:
    """Median seconds of one optimisation step on `batch` random clips (forward, backward, AdamW)."""
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
    """Both scorers on n frames of one object; raises if any J or F differs by more than 1e-9."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:height, :width]
    gt, pred = np.zeros((n, height, width), bool), np.zeros((n, height, width), bool)
    for t in range(n):  # an ellipse-ish object and a prediction that is off by a few pixels
        cy, cx, ry, rx = rng.integers(120, 360), rng.integers(200, 650), rng.integers(30, 110), rng.integers(30, 150)
        gt[t] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        pred[t] = ((yy - cy - rng.integers(-6, 7)) / ry) ** 2 + ((xx - cx - rng.integers(-6, 7)) / (rx + 5)) ** 2 <= 1
    # the official edge cases too: a missed object, a false alarm, an object out of view and not predicted
    for t, (g, p) in zip(range(1, n, 10), [(True, False), (False, True), (False, False)] * n):
        gt[t] &= g
        pred[t] &= p
    tic = time.perf_counter()
    j_fast, f_fast = region_similarity(gt, pred), boundary_f(gt, pred)
    fast = time.perf_counter() - tic
    tic = time.perf_counter()
    j_ref, f_ref = naive_jf(gt, pred)
    naive = time.perf_counter() - tic
    diff = float(max(np.abs(j_fast - j_ref).max(), np.abs(f_fast - f_ref).max()))
    if not diff <= 1e-9:
        raise AssertionError(f"vlalign.metrics.vos and the per-frame loop disagree by {diff} (J or F)")
    return {"frames": n, "size": (height, width), "radius": bound_pixels((height, width)), "ours_s": fast,
            "naive_s": naive, "max_diff": diff, "mean_j": float(j_fast.mean()), "mean_f": float(f_fast.mean())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--frames", type=int, default=60, help="frames timed for the lite model's fps")
    p.add_argument("--paper-frames", type=int, default=24, help="frames timed for the paper-scale fps")
    p.add_argument("--long-frames", type=int, default=1000, help="the long video of the memory check (lite)")
    p.add_argument("--height", type=int, default=360, help="height of the video frames (before the model's resize)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--jf-frames", type=int, default=100, help="480x854 frames scored by both J&F implementations")
    p.add_argument("--skip-paper-scale", action="store_true")
    args = speed_args(p, argv, SMOKE)
    started = time.perf_counter()
    peak = matmul_peak()
    # lite first: the process-wide peak RSS of the memory check must be lite's, not paper scale's
    variants = [("twostream_lite", {"pretrained_backbone": False, "pretrained_text": False}, 4, args.frames)]
    if not args.skip_paper_scale:
        variants.append(("twostream_r101", {"text_dir": bert_base_dir(), "pretrained_text": False}, 1,
                         args.paper_frames))
    rows, memory = [], None
    for name, overrides, step_batch, n in variants:
        model = build_model(name, **overrides).eval()
        params = sum(q.numel() for q in model.parameters()) / 1e6
        fps = video_fps(model, n, args.height, args.width)
        if memory is None:  # before the train step, whose activations would set the peak
            memory = long_video_memory(model, args.long_frames, args.height, args.width)
            print(memory, flush=True)
        step = train_step(model, step_batch)
        rows.append((name, model.config.input_size, model.config.num_frames, params, n, fps, step, step_batch))
        print(rows[-1], flush=True)
        del model
    jf = scorer_speed(args.jf_frames)
    print(jf, flush=True)
    total = time.perf_counter() - started

    lines = ["| model | input | clip T | params (M) | frames timed | video fps (1 expression) | train step (s) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {n} | {s}x{s} | {t} | {pm:.1f} | {k} | {f:.2f} | {st:.2f} (b={b} clips) |"
              for n, s, t, pm, k, f, st, b in rows]
    m = memory
    along = ", ".join(f"{rss:.0f} MiB at frame {i}" for i, rss in sorted(m["along"].items()))
    text = (
        f"# Referring video segmentation speed on this machine\n\nMeasured {date.today()} on "
        f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads, torch {torch.__version__}"
        f", flush-to-zero on), random weights, fp32; matmul peak in the same process {peak:.0f} GFLOP/s; the whole "
        f"run took {total / 60:.1f} min.\n\n"
        f"## Frames per second\n\n`VideoSegmenter.stream` over generated {args.width}x{args.height} RGB frames, one "
        f"expression, sliding window of the model's clip length T with stride ceil(T/2), after one window of "
        f"warm-up; everything from the frame array to the boolean mask at the frame's size is timed. The train "
        f"step (forward, backward, AdamW on random clips at the input size) is the median of 2 after one "
        f"warm-up.\n\n" + "\n".join(lines) + "\n\n"
        f"## Memory on a long video (twostream_lite)\n\nThe same lite model in the same process, frames "
        f"{args.width}x{args.height}: peak RSS after a short video, then after a long one.\n\n"
        f"| video | frames | peak RSS of the process (MiB) |\n|---|---:|---:|\n"
        f"| short | {m['short']} | {m['peak_short']:.0f} |\n| long | {m['long']} | {m['peak_long']:.0f} |\n\n"
        f"Resident memory along the long video: {along}. The long video took {m['seconds']:.0f} s "
        f"({m['long'] / m['seconds']:.1f} fps); the segmenter held at most {m['held']} frames at once (resized "
        f"windows + pending predictions; frame spacing {m['dilation']}).\n\n"
        f"## J&F scorer\n\n{jf['frames']} frames of {jf['size'][1]}x{jf['size'][0]} (F tolerance {jf['radius']}"
        f" px), one object per frame (ellipses, predictions a few pixels off; every 10th frame from the second an "
        f"edge case: missed object, false alarm, or both empty): `vlalign.metrics.vos` (region_similarity + "
        f"boundary_f) {jf['ours_s']:.3f} s vs a per-frame loop with skimage `dilation(disk)` on full frames "
        f"(`naive_jf` in this script) {jf['naive_s']:.3f} s: {jf['naive_s'] / jf['ours_s']:.1f}x faster. Every J "
        f"and F agrees (largest difference {jf['max_diff']:.1e}; mean J {jf['mean_j']:.4f}, mean F "
        f"{jf['mean_f']:.4f}).\n\n" + footer("speed_rvos.py", argv))
    publish(text, RESULTS.name, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
