"""LLCM reader (low-light cross-modality benchmark, ZYK100/LLCM with its DEEN code): training lists, test sets.

Layout:

    ROOT/vis/..., ROOT/nir/...                     training images, e.g. nir/0001/0001_c01_s185535_f7010_nir.jpg
    ROOT/idx/train_vis.txt, idx/train_nir.txt      lines "relative/path label"
    ROOT/idx/test_id.txt                           one comma-separated line of test identities
    ROOT/test_vis/cam{1..9}/{pid:04d}/*.jpg        visible test images
    ROOT/test_nir/cam{1,2,4..9}/{pid:04d}/*.jpg    near-infrared test images (there is no NIR camera 3)

Protocol (DEEN `test.py`, `data_manager.py`): the query is every test image of the query modality; the
gallery is one image per (identity, camera) of the other modality, drawn for trial t (0..9) with
`random.Random(t).choice` over sorted file names, identities in increasing order and cameras in the order
above (the stream of their `random.seed(t)`); 10 trials averaged; evaluate with
`vlalign.metrics.reid.eval_llcm` (removes gallery entries of the query's identity *and* camera).

Directions, as DEEN's `test_mode` builds them (`process_query_llcm(mode=test_mode[1])` = every image,
`process_gallery_llcm(mode=test_mode[0])` = sampled; mode 1 = test_vis, 2 = test_nir):

    "ir_to_vis"  [1, 2]: every NIR image, sampled visible set; each NIR image ranks the sampled visible set
    "vis_to_ir"  [2, 1]: every visible image, sampled NIR set; but DEEN's test.py (and its AGW copy) then
                 calls eval_llcm(-(gallery @ query.T), gallery_pids, query_pids, gallery_cams, query_cams):
                 each *sampled NIR* image ranks *every* visible image

`llcm_test` returns the two sets by DEEN's names (query = every image of the query modality, gallery = the
sampled other modality). `llcm_ranking` returns them in the roles `eval_llcm` gives them, which is what the
numbers printed by DEEN's code (and the LLCM README's table) measure: use it to score. For VIS->IR the probes
are then the sampled NIR images (one per identity and camera) and the ranked list is every visible test image:
many true matches per probe, so Rank-1 sits above mAP, as in the README's VIS->IR column (AGW 63.72 / 47.21).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from vlalign.data.regdb import read_index
from vlalign.data.sysu import ReidImages, list_images, read_id_file

__all__ = ["DIRECTIONS", "TEST_CAMS", "llcm_gallery", "llcm_query", "llcm_ranking", "llcm_test", "llcm_train"]

TEST_CAMS = {"vis": (1, 2, 3, 4, 5, 6, 7, 8, 9), "nir": (1, 2, 4, 5, 6, 7, 8, 9)}
DIRECTIONS = {"ir_to_vis": ("nir", "vis"), "vis_to_ir": ("vis", "nir")}
NUM_TRIALS = 10
_TRAIN_CAM = re.compile(r"_c(\d+)_")


def _check_modality(modality: str) -> None:
    if modality not in TEST_CAMS:
        raise ValueError(f"modality must be 'vis' or 'nir', got {modality!r}")


def llcm_train(root: str | Path) -> tuple[ReidImages, ReidImages]:
    """(visible, infrared) training images from idx/train_vis.txt and idx/train_nir.txt.

    pids are the files' labels; camids come from the `_c{cam}_` part of the file name, -1 where absent.
    """
    root = Path(root)
    out = []
    for modality in ("vis", "nir"):
        paths, labels = read_index(root / "idx" / f"train_{modality}.txt", root)
        cams = [int(m.group(1)) if (m := _TRAIN_CAM.search(Path(p).name)) else -1 for p in paths]
        out.append(ReidImages.from_lists(paths, labels, cams))
    return out[0], out[1]


def _test_folders(root: Path, modality: str):
    """(pid, cam, folder) of the test identities in the protocol's order; missing folders are skipped."""
    _check_modality(modality)
    base = root / f"test_{modality}"
    if not base.is_dir():
        raise FileNotFoundError(f"{root} is not an LLCM root: missing folder test_{modality}")
    for pid in sorted(read_id_file(root / "idx" / "test_id.txt")):
        for cam in TEST_CAMS[modality]:
            folder = base / f"cam{cam}" / f"{pid:04d}"
            if folder.is_dir():
                yield pid, cam, folder


def llcm_query(root: str | Path, modality: str) -> ReidImages:
    """Every test image of `modality` ("vis" or "nir")."""
    paths, pids, cams = [], [], []
    for pid, cam, folder in _test_folders(Path(root), modality):
        files = list_images(folder)
        paths += [str(p) for p in files]
        pids += [pid] * len(files)
        cams += [cam] * len(files)
    return ReidImages.from_lists(paths, pids, cams)


def llcm_gallery(root: str | Path, modality: str, trial: int = 0) -> ReidImages:
    """One seeded image per (test identity, camera) of `modality` for trial 0..9."""
    if not 0 <= trial < NUM_TRIALS:
        raise ValueError(f"trial must be in 0..{NUM_TRIALS - 1}, got {trial}")
    rng = random.Random(trial)
    paths, pids, cams = [], [], []
    for pid, cam, folder in _test_folders(Path(root), modality):
        files = [str(p) for p in list_images(folder)]
        if files:
            paths.append(rng.choice(files))
            pids.append(pid)
            cams.append(cam)
    return ReidImages.from_lists(paths, pids, cams)


def llcm_test(root: str | Path, direction: str, trial: int = 0) -> tuple[ReidImages, ReidImages]:
    """(query, gallery) for "ir_to_vis" or "vis_to_ir" by DEEN's names: every image of the query modality, one
    sampled image per (identity, camera) of the other. Score with `llcm_ranking` (module docstring)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {sorted(DIRECTIONS)}, got {direction!r}")
    query_modality, gallery_modality = DIRECTIONS[direction]
    return llcm_query(root, query_modality), llcm_gallery(root, gallery_modality, trial)


def llcm_ranking(root: str | Path, direction: str, trial: int = 0) -> tuple[ReidImages, ReidImages]:
    """(probes, ranked) in the roles DEEN's test.py gives them in `eval_llcm`: each probe ranks the other set.

    ir_to_vis: (every NIR image, sampled visible set); vis_to_ir: (sampled NIR set, every visible image).
    Score with `eval_llcm(-(probe_feats @ ranked_feats.T), probes.pids, ranked.pids, probes.camids,
    ranked.camids)`.
    """
    query, gallery = llcm_test(root, direction, trial)
    return (gallery, query) if direction == "vis_to_ir" else (query, gallery)
