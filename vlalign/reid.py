"""Visible-infrared re-identification as a task: staged training, feature extraction, the official protocols,
and search in one's own gallery. Nothing here parses command lines.

Training (`train_reid`) runs the model's stages in order (CLIP4VI-ReID: 1 TSG, 2 IFE, 3 HSA), each one
`vlalign.engine.train` run with its own TrainConfig into `OUT/stage<k>/`. With `resume=True` a stage whose
final checkpoint exists is skipped (its weights are loaded) and an interrupted one continues exactly; the
stage-1 image features and the stage-2/3 text table are recomputed from the loaded weights, identically.

Evaluation (`evaluate_reid`): features of the image encoder only, L2-normalised (with `test_center`, minus
the training mean that `train_reid` fits last, then normalised again), distance -(q @ g.T) (cosine);
SYSU-MM01 (IR queries, visible gallery, all/indoor, single/multi-shot, 10 trials, seeded or official
sampling), RegDB (one trial's split, both directions named), LLCM (both directions, 10 trials).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vlalign.data.images import load_image
from vlalign.data.reid_train import FeatureSet, ReidTrainSet, load_test_image, pk_sampler
from vlalign.data.sysu import IMAGE_SUFFIXES, ReidImages
from vlalign.engine import TrainConfig, apply_saved_average, latest_checkpoint, load_checkpoint, train
from vlalign.metrics.reid import eval_llcm, eval_regdb, eval_sysu
from vlalign.models.backbones import EfficientNetLite0
from vlalign.models.reid import STAGES
from vlalign.visualize import captioned, side_by_side

DATASETS = ("sysu", "regdb", "llcm")
RANKS = (1, 5, 10, 20)


# ---- data --------------------------------------------------------------------------------------------------
def training_images(dataset: str, root, regdb_trial: int = 1) -> tuple[ReidImages, ReidImages]:
    """(visible, infrared) training images of a data set in its official layout."""
    if dataset == "sysu":
        from vlalign.data.sysu import sysu_train

        return sysu_train(root)
    if dataset == "regdb":
        from vlalign.data.regdb import regdb_split

        return (regdb_split(root, regdb_trial, "train", "visible"),
                regdb_split(root, regdb_trial, "train", "thermal"))
    if dataset == "llcm":
        from vlalign.data.llcm import llcm_train

        return llcm_train(root)
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def _folded_tower(model):
    """The lite image tower with its BatchNorms folded into the convolutions while inside (eval only)."""
    encoder = model.image_encoder
    backbone = getattr(encoder, "backbone", None)
    if not isinstance(backbone, EfficientNetLite0):
        yield
        return
    with torch.no_grad():
        encoder.backbone = backbone.folded()
    try:
        yield
    finally:
        encoder.backbone = backbone


@torch.inference_mode()  # ~10% faster than no_grad on CPU; the features leave as numpy arrays
def extract_features(model, paths: list[str], batch_size: int = 64, raw_proj: bool = False) -> np.ndarray:
    """(N, D) float32 test features of the images at `paths` (eval mode, resize only).

    raw_proj: the un-normalised joint-space projection instead (stage-1 image features, as CLIP-ReID)."""
    was = model.training
    model.eval()
    device, size = _device(model), tuple(model.config.image_size)
    out = []
    with _folded_tower(model):
        for i in range(0, len(paths), batch_size):
            images = torch.stack([load_test_image(p, size) for p in paths[i:i + batch_size]]).to(device)
            out.append(model.encode(images)[1] if raw_proj else model.extract(images))
    model.train(was)
    if not out:
        return np.zeros((0, 0), np.float32)
    return torch.cat(out).float().cpu().numpy()


def fit_feature_center(model, visible: ReidImages, infrared: ReidImages, per_modality: int = 400,
                       seed: int = 0) -> torch.Tensor:
    """Set and return `model.feature_center` (C + D,): the mean of the visible and the infrared training images'
    mean test features, each over at most `per_modality` images drawn with `seed`.

    Why: every test feature shares a large common component (pooled ReLU6 maps are non-negative), which
    compresses the cosine similarities; subtracting the training mean spreads them. Both modalities weigh the
    same, so the centre does not lean to the larger one, and it needs no modality label at test."""
    rng = np.random.default_rng(seed)
    model.feature_center.zero_()  # the features below are then uncentred
    means = []
    for name, images in (("visible", visible), ("infrared", infrared)):
        if not len(images):
            raise ValueError(f"fit_feature_center needs training images of both modalities; got no {name} images")
        pick = rng.choice(len(images), min(per_modality, len(images)), replace=False)
        means.append(extract_features(model, [images.paths[i] for i in sorted(pick)]).mean(axis=0))
    center = torch.from_numpy(np.mean(means, axis=0))
    model.feature_center.copy_(center.to(model.feature_center))
    return center


# ---- training ----------------------------------------------------------------------------------------------
def _finished(out_dir: Path, iters: int) -> Path | None:
    path = latest_checkpoint(out_dir)
    return path if path is not None and int(path.name.split("_")[1]) >= iters else None


def train_reid(model, data_dir, out_dir, *, dataset: str = "sysu", regdb_trial: int = 1,
               stages: tuple[int, ...] = (1, 2, 3), iters: tuple[int, int, int] | None = None,
               lrs: tuple[float, float, float] | None = None, batch_sizes: tuple[int, int, int] | None = None,
               resume: bool = False, seed: int = 0, device: str = "auto", save_every: int = 200,
               eval_every: int = 0, eval_trials: int = 1, log_every: int = 20, num_workers: int = 0
               ) -> dict[int, Any]:
    """Train `model`'s stages in order into `out_dir/stage<k>`; returns {stage: engine summary or "skipped"}.

    iters / lrs / batch_sizes: per stage (TSG, IFE, HSA); default the model config's recipe. `stages` picks a
    subset (e.g. (2,) with the text losses weighted 0 is the image-only baseline).
    """
    cfg, out_dir = model.config, Path(out_dir)
    iters, lrs = tuple(iters or cfg.stage_iters), tuple(lrs or cfg.stage_lr)
    batch_sizes = tuple(batch_sizes or cfg.stage_batch_size)
    if not resume:
        existing = [s for s in stages if latest_checkpoint(out_dir / f"stage{s}") is not None]
        if existing:
            raise FileExistsError(f"{out_dir} already holds stage(s) {existing}: pass resume=True to continue, "
                                  "or choose another folder")
    visible, infrared = training_images(dataset, data_dir, regdb_trial)
    if len(np.union1d(visible.pids, infrared.pids)) != cfg.num_ids:
        raise ValueError(f"the model has {cfg.num_ids} identities but the {dataset} training set at {data_dir} "
                         f"has {len(np.union1d(visible.pids, infrared.pids))}: build it with num_ids=that")
    if device != "cpu" and torch.cuda.is_available():
        model.to("cuda")
    evaluate = None
    if eval_every:
        def evaluate(m):
            first = next(iter(evaluate_reid(m, dataset, data_dir, trials=eval_trials, regdb_trial=regdb_trial,
                                            quick=True).values()))
            return {k: first[k] for k in ("rank1", "mAP", "mINP")}

    summaries: dict[int, Any] = {}
    for stage in stages:
        stage_dir = out_dir / f"stage{stage}"
        done = _finished(stage_dir, iters[stage - 1]) if resume else None
        if done is not None:
            averaged = apply_saved_average(load_checkpoint(done, model), model)  # what that run ended with
            print(f"stage {stage}: complete at {done}, {'averaged ' if averaged else ''}weights loaded", flush=True)
            summaries[stage] = "skipped"
            continue
        model.set_stage(stage)
        tic = time.perf_counter()
        if stage == 1:  # TSG: frozen towers, so the visible images' features are computed once, unaugmented
            labels = np.searchsorted(np.union1d(visible.pids, infrared.pids), visible.pids)
            train_set = FeatureSet(torch.from_numpy(extract_features(model, visible.paths, raw_proj=True)), labels)
            factory = None
        else:
            train_set = ReidTrainSet(visible, infrared, cfg.image_size, seed=seed, channel_prob=cfg.channel_prob,
                                     remap_prob=cfg.remap_prob, remap_knots=cfg.remap_knots)
            factory = pk_sampler(cfg.num_instances)
        config = TrainConfig(
            out_dir=str(stage_dir), max_iters=iters[stage - 1], batch_size=batch_sizes[stage - 1],
            lr=lrs[stage - 1], weight_decay=cfg.weight_decay, schedule="cosine",
            warmup_iters=min(cfg.warmup_iters, iters[stage - 1] // 5), ema_decay=cfg.stage_ema[stage - 1],
            save_every=save_every, keep_last=1,
            eval_every=eval_every if stage > 1 else 0, log_every=log_every, seed=seed, device=device,
            num_workers=num_workers, resume=resume)
        print(f"stage {stage} ({['TSG', 'IFE', 'HSA'][stage - 1]}): {len(train_set)} training items, "
              f"{config.max_iters} iterations at lr {config.lr}", flush=True)
        prepare = time.perf_counter() - tic
        heads = [{"params": model.head_parameters(), "lr_mult": cfg.head_lr_mult, "name": "heads"}]
        summaries[stage] = train(model, train_set, config, evaluate=evaluate if stage > 1 else None,
                                 sampler_factory=factory, param_groups=heads if stage > 1 else None)
        summaries[stage]["prepare_seconds"] = prepare  # stage-1 feature extraction, data listing
    if cfg.test_center:  # part of training: counted in the last stage's time when that stage ran here
        tic = time.perf_counter()
        fit_feature_center(model, visible, infrared, seed=seed)
        seconds = time.perf_counter() - tic
        if isinstance(summaries[stages[-1]], dict):
            summaries[stages[-1]]["center_seconds"] = seconds
        print(f"test feature centre fitted in {seconds:.1f} s", flush=True)
    # what the model card says (save_pretrained reads it; vlalign/hub.py); metrics follow the final evaluation
    model.card_info = card_info(dataset, data_dir, regdb_trial, len(visible), len(infrared), summaries, seed)
    return summaries


def card_info(dataset: str, data_dir, regdb_trial: int, num_visible: int, num_infrared: int,
              summaries: dict[int, Any], seed: int) -> dict[str, Any]:
    """Model-card entries of a re-id training run: the data, the evaluation protocol, the stages run."""
    name = Path(data_dir).name
    split = f", RegDB split {regdb_trial}" if dataset == "regdb" else ""
    protocol = {
        "sysu": "SYSU-MM01: infrared queries against visible galleries, all-search single-shot, seeded "
                "galleries (AGW lineage); trials in the metrics table",
        "regdb": f"RegDB split {regdb_trial}: visible to thermal and thermal to visible",
        "llcm": "LLCM: IR to VIS and VIS to IR (DEEN's roles); trials in the metrics table",
    }[dataset]
    stages = {STAGES[k].upper(): "skipped (resumed)" if v == "skipped" else f"{v['iteration']} iterations"
              for k, v in summaries.items()}
    return {"dataset": name,
            "data": f"{dataset} data `{name}`{split}: {num_visible} visible and {num_infrared} infrared "
                    f"training images",
            "protocol": protocol + "; image encoder only, cosine distance (`vlalign reid eval`)",
            "training": {**stages, "seed": seed}}


# ---- evaluation --------------------------------------------------------------------------------------------
class _Features:
    """Features of any image path, extracted once per path (galleries of different trials overlap)."""

    def __init__(self, model, batch_size: int):
        self.model, self.batch_size, self.rows, self.chunks = model, batch_size, {}, []

    def __call__(self, paths: list[str]) -> np.ndarray:
        new = list(dict.fromkeys(p for p in paths if p not in self.rows))
        if new:
            feats = extract_features(self.model, new, self.batch_size)
            base = sum(len(c) for c in self.chunks)
            self.chunks.append(feats)
            self.rows.update({p: base + i for i, p in enumerate(new)})
        table = np.concatenate(self.chunks)
        return table[[self.rows[p] for p in paths]]


def _scores(results: list[tuple[np.ndarray, float, float]], num_q: int, num_g: list[int]) -> dict[str, Any]:
    cmc = np.mean([r[0] for r in results], axis=0)
    out: dict[str, Any] = {f"rank{k}": float(cmc[min(k, len(cmc)) - 1]) for k in RANKS}
    out.update(mAP=float(np.mean([r[1] for r in results])), mINP=float(np.mean([r[2] for r in results])),
               trials=len(results), queries=num_q, gallery=float(np.mean(num_g)))
    return out


def evaluate_reid(model, dataset: str, root, *, trials: int = 10, modes: tuple[str, ...] = ("all",),
                  shots: tuple[int, ...] = (1,), sampling: str = "seeded", regdb_trial: int = 1,
                  batch_size: int = 64, quick: bool = False,
                  ids: Sequence[int] | None = None) -> dict[str, dict[str, Any]]:
    """{protocol name: rank1/5/10/20, mAP, mINP (fractions), trials, queries, gallery size} for one data set.

    SYSU: every mode x shots, `trials` trials of `sampling`; RegDB: trial `regdb_trial`'s test split, both
    directions; LLCM: both directions, `trials` trials, in DEEN's roles (`vlalign.data.llcm.llcm_ranking`: for
    VIS->IR, 'queries' are the sampled NIR images and 'gallery' every visible image). quick: only the first
    protocol (training-time eval). ids (SYSU, seeded sampling only): other identities than the test ones in
    the same roles, e.g. training identities to measure what a model memorised."""
    feats = _Features(model, batch_size)
    results: dict[str, dict[str, Any]] = {}
    if ids is not None and dataset != "sysu":
        raise ValueError(f"ids selects SYSU identities; {dataset!r} has fixed test splits")
    if dataset == "sysu":
        from vlalign.data.sysu import load_rand_perm_cam, sysu_gallery, sysu_query

        query = sysu_query(root, ids)
        qf = feats(query.paths)
        perm = load_rand_perm_cam(Path(root) / "exp" / "rand_perm_cam.mat") if sampling == "official" else None
        for mode in modes:
            for n in shots:
                runs, sizes = [], []
                for t in range(trials):
                    g = sysu_gallery(root, mode, n, t, sampling, perm, ids)
                    runs.append(eval_sysu(-(qf @ feats(g.paths).T), query.pids, g.pids, query.camids, g.camids))
                    sizes.append(len(g))
                shot = "single-shot" if n == 1 else f"multi-shot ({n})"
                results[f"SYSU {mode}-search {shot}, {sampling}"] = _scores(runs, len(query), sizes)
                if quick:
                    return results
    elif dataset == "regdb":
        from vlalign.data.regdb import regdb_test

        for direction in ("visible_to_thermal", "thermal_to_visible"):
            q, g = regdb_test(root, regdb_trial, direction)
            run = eval_regdb(-(feats(q.paths) @ feats(g.paths).T), q.pids, g.pids)
            results[f"RegDB {direction.replace('_', ' ')}, trial {regdb_trial}"] = _scores([run], len(q), [len(g)])
            if quick:
                return results
    elif dataset == "llcm":
        from vlalign.data.llcm import llcm_ranking

        for direction in ("ir_to_vis", "vis_to_ir"):
            runs, sizes = [], []
            for t in range(trials):  # DEEN's roles: for VIS->IR the sampled NIR images rank every visible image
                q, g = llcm_ranking(root, direction, t)
                runs.append(eval_llcm(-(feats(q.paths) @ feats(g.paths).T), q.pids, g.pids, q.camids, g.camids))
                sizes.append(len(g))
            results[f"LLCM {direction.replace('_', ' ')}"] = _scores(runs, len(q), sizes)
            if quick:
                return results
    else:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    return results


def metric_table(results: dict[str, dict[str, Any]]) -> str:
    """Plain-text table: one row per protocol, Rank-1/5/10/20, mAP, mINP in percent, trials averaged."""
    cols = [f"rank{k}" for k in RANKS] + ["mAP", "mINP"]
    width = max([len("protocol")] + [len(name) for name in results]) + 2
    lines = [f"{'protocol':<{width}}" + "".join(f"{c:>8}" for c in ["R1", "R5", "R10", "R20", "mAP", "mINP"])
             + f"{'trials':>8}{'queries':>9}{'gallery':>9}"]
    for name, m in results.items():
        lines.append(f"{name:<{width}}" + "".join(f"{100 * m[c]:>8.2f}" for c in cols)
                     + f"{m['trials']:>8}{m['queries']:>9}{m['gallery']:>9.0f}")
    return "\n".join(lines)


# ---- search ------------------------------------------------------------------------------------------------
def gallery_images(folder) -> list[str]:
    """Every image file under `folder` (recursively), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"gallery folder not found: {folder}")
    paths = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise ValueError(f"{folder} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def search(model, query: str, gallery: list[str], topk: int = 10,
           batch_size: int = 64) -> list[tuple[str, float]]:
    """The `topk` gallery images closest to the query image: [(path, cosine similarity)], best first."""
    q = extract_features(model, [str(query)], batch_size)
    g = extract_features(model, gallery, batch_size)
    sims = (g @ q[0]).astype(np.float64)
    order = np.argsort(-sims, kind="stable")[:topk]
    return [(gallery[i], float(sims[i])) for i in order]


def contact_sheet(query: str, ranked: list[tuple[str, float]], size: tuple[int, int] = (128, 64)) -> Image.Image:
    """The query (left) and the ranked gallery images, each captioned with its rank and similarity."""
    def tile(path: str, caption: str) -> Image.Image:
        return captioned(load_image(path).resize((size[1], size[0]), Image.BILINEAR), caption)

    tiles = [tile(query, "query")] + [tile(p, f"{i} {s:.2f}") for i, (p, s) in enumerate(ranked, start=1)]
    return side_by_side(*tiles, gap=6)
