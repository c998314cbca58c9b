"""Speed of visible-infrared re-identification on this machine: test-feature throughput of the image encoder,
the whole `extract_features` path from JPEG files, and the SYSU-MM01 evaluation (the vectorised
`vlalign.metrics.reid.eval_sysu`) against a straightforward per-query loop.

    .venv/bin/python benchmarks/speed_reid.py --write     # -> benchmarks/results/speed_reid.md
    .venv/bin/python benchmarks/speed_reid.py --smoke     # small numbers, to check the script (never written)

- Encoder: `model.extract` (image encoder + L2 normalisation, the test feature) in eval mode under
  `torch.inference_mode`, on random pixels at the model's input size; with `test_flip` (the lite recipe) that is
  two encoder passes per image, the image and its mirror image. `clip4vireid_lite` has its real offline
  weights; `clip4vireid_vitb16` is CLIP ViT-B/16's architecture with random weights (speed does not depend on
  them; no CLIP checkpoint can be downloaded here).
- From disk: `vlalign.reid.extract_features` on generated JPEG person crops of varied sizes, everything included
  (decode, RGB conversion, resize to the input size, batching, the encoder); decode + resize alone is timed too.
- Evaluation: a SYSU-MM01-sized problem, all-search single-shot: 3,803 infrared queries (cameras 3 and 6) x 301
  visible gallery images (one per identity and camera of 1, 2, 4, 5) over 96 test identities, 10 trials, each
  trial with its own gallery features; random features of the paper-scale test dimension (768 + 512). Both
  scorers must agree (cmc, mAP, mINP to 1e-9) on every trial before anything is timed.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))  # sibling modules, also when imported from elsewhere
from report import footer, publish, speed_args  # noqa: E402

from vlalign.data.reid_train import load_test_image  # noqa: E402
from vlalign.metrics.reid import eval_sysu  # noqa: E402
from vlalign.reid import extract_features  # noqa: E402

RESULTS_NAME = "speed_reid.md"
VISIBLE_CAMS, INFRARED_CAMS = (1, 2, 4, 5), (3, 6)  # SYSU-MM01 all-search gallery and query cameras
SMOKE = {"batches": [1, 4], "images": 12, "ids": 10, "queries": 300, "gallery": 31, "trials": 2, "repeats": 1}


# ---------------------------------------------------------------------------------------------------- models
def build(name: str):
    """The model in eval mode. vitb16: CLIP ViT-B/16's numbers (OpenAI's defaults) with random weights."""
    from vlalign.models.clip.model import ClipConfig
    from vlalign.models.reid import clip4vireid_lite, clip4vireid_vitb16

    if name == "clip4vireid_lite":
        return clip4vireid_lite().eval()
    return clip4vireid_vitb16(pretrained_backbone=False, clip_config=dataclasses.asdict(ClipConfig())).eval()


@torch.inference_mode()
def encoder_throughput(model, batch: int, repeats: int) -> float:
    """Images per second of `model.extract` on one (batch, 3, H, W) tensor: median of `repeats` after a warm-up."""
    height, width = model.config.image_size
    image = torch.rand(batch, 3, height, width)
    model.extract(image)
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        model.extract(image)
        times.append(time.perf_counter() - tic)
    return batch / statistics.median(times)


def write_jpegs(folder: Path, n: int, seed: int = 0) -> list[str]:
    """n JPEG person-crop stand-ins of varied sizes (W 64..160, H about 2-2.6 W): smooth colour fields + noise,
    so that decoding costs what a photograph's does rather than a flat image's."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        width = int(rng.integers(64, 161))
        height = int(width * rng.uniform(2.0, 2.6))
        coarse = rng.integers(0, 256, (8, 4, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR), dtype=np.int16)
        pixels = np.clip(field + rng.integers(-20, 21, field.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(str(path))
    return paths


def disk_throughput(model, paths: list[str], batch: int) -> float:
    """Images per second of the whole `extract_features` path (one pass; a 2-image call warms it up)."""
    extract_features(model, paths[:2], batch)
    tic = time.perf_counter()
    feats = extract_features(model, paths, batch)
    elapsed = time.perf_counter() - tic
    assert feats.shape[0] == len(paths), feats.shape
    return len(paths) / elapsed


def decode_throughput(paths: list[str], size: tuple[int, int]) -> float:
    """Images per second of decode + RGB + resize alone (`load_test_image`, what extract_features calls)."""
    tic = time.perf_counter()
    for path in paths:
        load_test_image(path, size)
    return len(paths) / (time.perf_counter() - tic)


# ------------------------------------------------------------------------------------------------ evaluation
def sysu_problem(num_ids: int, num_queries: int, gallery: int, trials: int, dim: int, seed: int = 0):
    """Labels with SYSU-MM01's all-search single-shot structure and one distance matrix per trial.

    Gallery: one image per (identity, visible camera) where the identity was seen; `gallery` of the
    num_ids x 4 slots are used (SYSU: 301 of 384), every identity in at least one camera. Queries: infrared
    images of every identity from camera 3 or 6, sorted by identity then camera like the readers. A query from
    camera 3 whose identity was seen only by camera 2 has no true match left: a realistic skipped query.
    Features: identity centre + noise, L2-normalised, float32 like extracted features; distance -(q @ g.T).
    Returns (distmats list of (Q, G) float32, q_pids, g_pids, q_camids, g_camids).
    """
    if not num_ids <= gallery <= num_ids * len(VISIBLE_CAMS) or num_queries < num_ids:
        raise ValueError(f"need ids <= gallery <= 4 x ids and queries >= ids, got {num_ids} ids, {gallery} gallery, "
                         f"{num_queries} queries")
    rng = np.random.default_rng(seed)
    slots = num_ids * len(VISIBLE_CAMS)
    must = np.arange(num_ids) * len(VISIBLE_CAMS) + rng.integers(0, len(VISIBLE_CAMS), num_ids)
    rest = rng.permutation(np.setdiff1d(np.arange(slots), must))[: gallery - num_ids]
    chosen = np.sort(np.concatenate([must, rest]))
    g_pids, g_camids = chosen // len(VISIBLE_CAMS), np.array(VISIBLE_CAMS)[chosen % len(VISIBLE_CAMS)]
    q_pids = np.sort(np.concatenate([np.arange(num_ids), rng.integers(0, num_ids, num_queries - num_ids)]))
    q_camids = rng.choice(INFRARED_CAMS, num_queries)
    order = np.lexsort((q_camids, q_pids))
    q_pids, q_camids = q_pids[order], q_camids[order]

    def unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    centres = rng.standard_normal((num_ids, dim))
    query = unit(centres[q_pids] + 4.0 * rng.standard_normal((num_queries, dim)))
    distmats = [-(query @ unit(centres[g_pids] + 4.0 * rng.standard_normal((gallery, dim))).T)
                for _ in range(trials)]
    return distmats, q_pids, g_pids, q_camids, g_camids


def per_query_sysu(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 20):
    """The widely used per-query pattern, written plainly: (cmc, mAP, mINP) of SYSU-MM01.

    For each query: rank the gallery (stable sort, ties by gallery index as eval_sysu documents), drop gallery
    cam 2 when the query is from cam 3, skip the query if no true match is left; CMC over the unique identities
    in rank order; AP and INP on the kept list. A curve shorter than the CMC length keeps its last value.
    """
    length = min(max_rank, distmat.shape[1])
    cmc_sum, aps, inps = np.zeros(length), [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        if q_camids[i] == 3:
            order = order[g_camids[order] != 2]
        ranked = g_pids[order]
        hit_ranks = np.flatnonzero(ranked == q_pids[i]) + 1  # 1-based ranks of the true matches
        if hit_ranks.size == 0:
            continue
        _, first = np.unique(ranked, return_index=True)
        curve = np.cumsum(ranked[np.sort(first)] == q_pids[i])[:length]
        cmc_sum += np.pad(curve, (0, length - curve.size), mode="edge")
        aps.append(np.mean(np.arange(1, hit_ranks.size + 1) / hit_ranks))
        inps.append(hit_ranks.size / hit_ranks[-1])
    return (cmc_sum / len(aps)).astype(np.float32), float(np.mean(aps)), float(np.mean(inps))


def timed(fn, repeats: int) -> float:
    """Median seconds of `fn()` over `repeats` calls."""
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def evaluation_speed(args) -> dict:
    distmats, q_pids, g_pids, q_camids, g_camids = sysu_problem(args.ids, args.queries, args.gallery, args.trials,
                                                                args.dim)
    labels = (q_pids, g_pids, q_camids, g_camids)
    results = []
    for t, distmat in enumerate(distmats):  # identical results first: a fast wrong scorer is worth nothing
        (cmc_a, map_a, minp_a), (cmc_b, map_b, minp_b) = eval_sysu(distmat, *labels), per_query_sysu(distmat, *labels)
        if not (np.allclose(cmc_a, cmc_b, rtol=0, atol=1e-9) and abs(map_a - map_b) <= 1e-9
                and abs(minp_a - minp_b) <= 1e-9):
            raise AssertionError(f"trial {t}: eval_sysu {cmc_a[0]:.6f}/{map_a:.9f}/{minp_a:.9f} differs from the "
                                 f"per-query loop {cmc_b[0]:.6f}/{map_b:.9f}/{minp_b:.9f} (rank-1/mAP/mINP)")
        results.append((cmc_a, map_a, minp_a))
    ours = timed(lambda: [eval_sysu(d, *labels) for d in distmats], args.repeats)
    loop = timed(lambda: [per_query_sysu(d, *labels) for d in distmats], args.repeats)
    valid = sum(int(np.isin(g_pids[(g_camids != 2) | (c != 3)], p).any()) for p, c in zip(q_pids, q_camids))
    return {"ours_s": ours, "loop_s": loop, "valid": valid, "rank1": float(np.mean([r[0][0] for r in results])),
            "mAP": float(np.mean([r[1] for r in results])), "mINP": float(np.mean([r[2] for r in results]))}


# ------------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64], help="encoder batch sizes")
    p.add_argument("--images", type=int, default=256, help="generated JPEGs read by extract_features")
    p.add_argument("--ids", type=int, default=96, help="test identities (SYSU-MM01: 96)")
    p.add_argument("--queries", type=int, default=3803, help="infrared queries (SYSU-MM01: 3,803)")
    p.add_argument("--gallery", type=int, default=301, help="gallery images per trial (SYSU-MM01 single-shot: 301)")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--dim", type=int, default=768 + 512, help="feature dimension (vitb16: CLS 768 + proj 512)")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions (medians)")
    p.add_argument("--skip-paper-scale", action="store_true", help="lite only")
    args = speed_args(p, argv, SMOKE)

    names = ["clip4vireid_lite"] + ([] if args.skip_paper_scale else ["clip4vireid_vitb16"])
    rows = []
    with tempfile.TemporaryDirectory(prefix="speed_reid") as tmp:
        paths = write_jpegs(Path(tmp), args.images)
        for name in names:
            model = build(name)
            size = tuple(model.config.image_size)
            with torch.inference_mode():
                dim = model.extract(torch.rand(1, 3, *size)).shape[1]
            params = sum(q.numel() for q in model.image_encoder.parameters()) / 1e6
            per_batch = {b: encoder_throughput(model, b, max(1, args.repeats if b > 1 else 2 * args.repeats))
                         for b in args.batches}
            disk_batch = max(args.batches)
            rows.append({"name": name, "size": size, "dim": dim, "params": params, "encoder": per_batch,
                         "views": 2 if model.config.test_flip else 1,
                         "disk": disk_throughput(model, paths, disk_batch), "disk_batch": disk_batch,
                         "decode": decode_throughput(paths, size)})
            print(rows[-1], flush=True)
            del model
    ev = evaluation_speed(args)
    print(ev, flush=True)

    batch_cols = " | ".join(f"encoder b={b} (img/s)" for b in args.batches)
    lines = [f"| model | input (HxW) | views | feature dim | image encoder params (M) | {batch_cols} | "
             "extract_features from JPEG (img/s) | decode + resize alone (img/s) |",
             "|---|---|---:|---:|---:|" + "---:|" * len(args.batches) + "---:|---:|"]
    for r in rows:
        cells = " | ".join(f"{r['encoder'][b]:.3g}" for b in args.batches)
        lines.append(f"| {r['name']} | {r['size'][0]}x{r['size'][1]} | {r['views']} | {r['dim']} | "
                     f"{r['params']:.1f} | {cells} | "
                     f"{r['disk']:.3g} (b={r['disk_batch']}) | {r['decode']:.0f} |")
    n_eval = args.queries * args.trials
    text = (
        f"# Re-identification speed on this machine\n\nMeasured {date.today()} on "
        f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads, torch {torch.__version__}"
        f", flush-to-zero on), fp32, medians of {args.repeats} timed runs after a warm-up.\n\n"
        f"## Test features\n\n`model.extract` under `torch.inference_mode` on random pixels; `clip4vireid_lite` "
        f"with its real offline weights, `clip4vireid_vitb16` with CLIP ViT-B/16's architecture and random "
        f"weights. 'views': encoder passes per image (2 = the image and its mirror image, `test_flip`). "
        f"'From JPEG': `vlalign.reid.extract_features` over {args.images} generated JPEG crops "
        f"(64-160 px wide, 2-2.6x as tall), decode and resize included, one pass; it runs the lite tower with "
        f"its BatchNorms folded into the convolutions (`EfficientNetLite0.folded`), the encoder columns do not."
        f"\n\n" + "\n".join(lines) + "\n\n"
        f"## SYSU-MM01 evaluation\n\nAll-search single-shot sized: {args.queries} infrared queries (cameras 3, 6) x "
        f"{args.gallery} visible gallery images (cameras 1, 2, 4, 5) over {args.ids} identities, {args.trials} "
        f"trials, {args.dim}-d random features (distance -(q @ g.T), float32); {ev['valid']} queries per trial keep "
        f"a true match after the camera 3/2 rule. Both scorers gave identical cmc, mAP and mINP (to 1e-9) on every "
        f"trial (rank-1 {ev['rank1']:.3f}, mAP {ev['mAP']:.3f}, mINP {ev['mINP']:.3f} on these features).\n\n"
        "| scorer | all trials (s) | per trial (ms) | per query (us) |\n|---|---:|---:|---:|\n"
        f"| `vlalign.metrics.reid.eval_sysu` (vectorised) | {ev['ours_s']:.3f} | "
        f"{1e3 * ev['ours_s'] / args.trials:.1f} | {1e6 * ev['ours_s'] / n_eval:.1f} |\n"
        f"| per-query loop (`per_query_sysu` in this script) | {ev['loop_s']:.3f} | "
        f"{1e3 * ev['loop_s'] / args.trials:.1f} | {1e6 * ev['loop_s'] / n_eval:.1f} |\n\n"
        f"The vectorised scorer is {ev['loop_s'] / ev['ours_s']:.1f}x faster.\n\n" + footer("speed_reid.py", argv))
    publish(text, RESULTS_NAME, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
