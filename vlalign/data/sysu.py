"""SYSU-MM01 reader: training images, the IR query set and the visible gallery of both sampling lineages.

Layout (official release; `cam3`, `cam6` are near-infrared, stored as 3-channel JPEGs):

    ROOT/cam{1..6}/{pid:04d}/{img:04d}.jpg
    ROOT/exp/train_id.txt, val_id.txt, test_id.txt      one comma-separated line of integer ids
    ROOT/exp/rand_perm_cam.mat                          (official lineage only) fixed gallery permutations

Protocol (official README and evaluation/*.m): queries are *all* images of the test identities from the IR
cameras 3 and 6; the gallery holds `shots` images per (identity, visible camera), cameras 1, 2, 4, 5
("all" search) or 1, 2 ("indoor"); single-shot 1, multi-shot 10; 10 trials averaged; evaluate with
`vlalign.metrics.reid.eval_sysu`. Training uses train + val identities (as AGW's `pre_process_sysu.py`).

Two gallery lineages, numbers not interchangeable; name the one used:
- "seeded" (AGW, DDAG, CAJ, DEEN): for trial t, Python's `random.Random(t)` (the same stream as their global
  `random.seed(t)`), walking identities in increasing order and, inside, cameras in the order above, one
  `choice` from the sorted file names of each existing (identity, camera) folder. Single-shot is exactly
  theirs. Multi-shot: AGW is single-shot only and CSDN draws with the *unseeded* global numpy state, so ours
  is `sample(files, min(10, n))` from the same seeded stream (our choice, reproducible per trial).
- "official": row t (0-based; Matlab `run_time` t+1) of `rand_perm_cam{cam}{pid}`, first `shots` entries:
  1-based instance numbers, i.e. file `{ins:04d}.jpg` (as SAAI/IDKL `get_gallery_names`).

`ReidImages` (paths, pids, camids) is the common return type of the SYSU, RegDB and LLCM readers.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "INDOOR_CAMS",
    "INFRARED_CAMS",
    "VISIBLE_CAMS",
    "ReidImages",
    "list_images",
    "load_rand_perm_cam",
    "read_id_file",
    "sysu_gallery",
    "sysu_query",
    "sysu_train",
]

VISIBLE_CAMS = (1, 2, 4, 5)
INFRARED_CAMS = (3, 6)
INDOOR_CAMS = (1, 2)
GALLERY_CAMS = {"all": VISIBLE_CAMS, "indoor": INDOOR_CAMS}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")  # anything else in a folder (Thumbs.db, ...) is ignored
NUM_TRIALS = 10


@dataclass(frozen=True)
class ReidImages:
    """A list of re-id images: paths (N,) absolute file names, pids (N,) int64, camids (N,) int64."""

    paths: list[str]
    pids: np.ndarray
    camids: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    @classmethod
    def from_lists(cls, paths: Sequence[str], pids: Iterable[int], camids: Iterable[int]) -> ReidImages:
        return cls(list(paths), np.asarray(list(pids), dtype=np.int64), np.asarray(list(camids), dtype=np.int64))


def read_id_file(path: str | Path) -> list[int]:
    """Identities of an `exp/*_id.txt` / `idx/test_id.txt` file: one line of comma-separated integers."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"identity list not found: {path}")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(lines) != 1:
        raise ValueError(f"{path}: expected one line of comma-separated ids, found {len(lines)} non-empty lines")
    ids = []
    for token in lines[0].split(","):
        token = token.strip()
        if not token.isdigit():
            raise ValueError(f"{path}: {token!r} is not a non-negative integer id")
        ids.append(int(token))
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: ids repeat ({len(ids)} ids, {len(set(ids))} distinct)")
    return ids


def list_images(folder: Path) -> list[Path]:
    """Image files of one (camera, identity) folder, sorted by name (the order every lineage indexes)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _check_root(root: str | Path) -> Path:
    root = Path(root)
    missing = [f"cam{c}" for c in (*VISIBLE_CAMS, *INFRARED_CAMS) if not (root / f"cam{c}").is_dir()]
    if missing:
        raise FileNotFoundError(f"{root} is not a SYSU-MM01 root: missing folder(s) {', '.join(missing)}")
    return root


def _collect(root: Path, ids: Iterable[int], cams: Sequence[int]) -> ReidImages:
    paths, pids, camids = [], [], []
    for pid in sorted(ids):
        for cam in cams:
            folder = root / f"cam{cam}" / f"{pid:04d}"
            if folder.is_dir():  # not every identity appears in every camera
                files = list_images(folder)
                paths += [str(p) for p in files]
                pids += [pid] * len(files)
                camids += [cam] * len(files)
    return ReidImages.from_lists(paths, pids, camids)


def sysu_train(root: str | Path, splits: Sequence[str] = ("train", "val")) -> tuple[ReidImages, ReidImages]:
    """(visible, infrared) images of the identities of `exp/{split}_id.txt` for each split (raw pids)."""
    root = _check_root(root)
    ids = [pid for split in splits for pid in read_id_file(root / "exp" / f"{split}_id.txt")]
    return _collect(root, ids, VISIBLE_CAMS), _collect(root, ids, INFRARED_CAMS)


def sysu_query(root: str | Path, ids: Sequence[int] | None = None) -> ReidImages:
    """All IR images (cams 3, 6) of the test identities (or of `ids`); the same for all- and indoor-search."""
    root = _check_root(root)
    return _collect(root, read_id_file(root / "exp" / "test_id.txt") if ids is None else ids, INFRARED_CAMS)


def _gallery_cams(mode: str) -> tuple[int, ...]:
    if mode not in GALLERY_CAMS:
        raise ValueError(f"mode must be 'all' or 'indoor', got {mode!r}")
    return GALLERY_CAMS[mode]


def sysu_gallery(
    root: str | Path,
    mode: str = "all",
    shots: int = 1,
    trial: int = 0,
    sampling: str = "seeded",
    perm: dict[int, list[np.ndarray | None]] | None = None,
    ids: Sequence[int] | None = None,
) -> ReidImages:
    """The visible gallery of one trial (0..9): `shots` images per (test identity, gallery camera).

    sampling "seeded" (AGW lineage) or "official" (`rand_perm_cam.mat`; pass `perm` from
    `load_rand_perm_cam` to read the file once, otherwise it is read from ROOT/exp/rand_perm_cam.mat).
    ids: other identities than the test ones (e.g. training identities, to measure what a model memorised);
    seeded sampling only.
    """
    root = _check_root(root)
    cams = _gallery_cams(mode)
    if shots < 1:
        raise ValueError(f"shots must be >= 1 (1 single-shot, 10 multi-shot), got {shots}")
    if not 0 <= trial < NUM_TRIALS:
        raise ValueError(f"trial must be in 0..{NUM_TRIALS - 1}, got {trial}")
    if ids is not None and sampling != "seeded":
        raise ValueError(f"a gallery of chosen ids needs sampling='seeded' (the official file covers the test "
                         f"ids only), got {sampling!r}")
    ids = read_id_file(root / "exp" / "test_id.txt") if ids is None else list(ids)
    if sampling == "seeded":
        return _seeded_gallery(root, ids, cams, shots, trial)
    if sampling == "official":
        if perm is None:
            perm = load_rand_perm_cam(root / "exp" / "rand_perm_cam.mat")
        return _official_gallery(root, ids, cams, shots, trial, perm)
    raise ValueError(f"sampling must be 'seeded' or 'official', got {sampling!r}")


def _seeded_gallery(root: Path, ids: list[int], cams: Sequence[int], shots: int, trial: int) -> ReidImages:
    rng = random.Random(trial)  # the stream of `random.seed(trial)`, without touching the global state
    paths, pids, camids = [], [], []
    for pid in sorted(ids):
        for cam in cams:
            folder = root / f"cam{cam}" / f"{pid:04d}"
            if not folder.is_dir():
                continue
            files = [str(p) for p in list_images(folder)]
            if not files:  # an empty folder draws nothing (the reference code would crash here)
                continue
            chosen = [rng.choice(files)] if shots == 1 else sorted(rng.sample(files, min(shots, len(files))))
            paths += chosen
            pids += [pid] * len(chosen)
            camids += [cam] * len(chosen)
    return ReidImages.from_lists(paths, pids, camids)


def load_rand_perm_cam(path: str | Path) -> dict[int, list[np.ndarray | None]]:
    """Read the official `rand_perm_cam.mat`: {cam (1..6): [per pid-1: (trials, n) int64 array or None]}.

    Structure (Matlab): `rand_perm_cam` is a 6-cell array; cell c holds one cell per identity index (pid - 1),
    each a (10, n) matrix whose row t is a permutation of 1..n, the image numbers of that identity in camera
    c; empty when the identity has no image there. Needs SciPy.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"official gallery permutations not found: {path} (copy evaluation/data_split/rand_perm_cam.mat "
            "of github.com/wuancong/SYSU-MM01 into exp/, or use sampling='seeded')"
        )
    try:
        from scipy.io import loadmat
    except ImportError as err:  # SciPy is a dev extra: say so instead of a bare ModuleNotFoundError
        raise ImportError("reading rand_perm_cam.mat needs SciPy: pip install scipy") from err
    try:
        content = loadmat(str(path))
    except Exception as err:  # scipy raises several types for a corrupt or non-MAT file
        raise ValueError(f"{path}: not a readable MAT-file ({err})") from err
    if "rand_perm_cam" not in content:
        names = sorted(k for k in content if not k.startswith("__"))
        raise ValueError(f"{path}: no variable 'rand_perm_cam' (found {names})")
    cells = np.asarray(content["rand_perm_cam"]).reshape(-1)
    if cells.dtype != object or len(cells) != 6:
        raise ValueError(f"{path}: rand_perm_cam must be a cell array of 6 cameras, got {cells.dtype} x {len(cells)}")
    perm: dict[int, list[np.ndarray | None]] = {}
    for cam, cell in enumerate(cells, start=1):
        per_id = np.asarray(cell).reshape(-1)
        if per_id.dtype != object:
            raise ValueError(f"{path}: rand_perm_cam{{{cam}}} must be a cell array over identities")
        perm[cam] = [_perm_matrix(path, cam, i + 1, m) for i, m in enumerate(per_id)]
    return perm


def _perm_matrix(path: Path, cam: int, pid: int, matrix: object) -> np.ndarray | None:
    matrix = np.asarray(matrix)
    if matrix.size == 0:
        return None
    if matrix.ndim == 1:  # one image in that camera: loadmat may squeeze (10, 1) into (10,)
        matrix = matrix[:, None]
    values = matrix.astype(np.float64)
    if matrix.ndim != 2 or not np.all(values == np.round(values)) or values.min() < 1:
        raise ValueError(
            f"{path}: rand_perm_cam{{{cam}}}{{{pid}}} must be a 2-D matrix of 1-based image numbers, "
            f"got shape {matrix.shape}"
        )
    return values.astype(np.int64)


def _official_gallery(root, ids, cams, shots, trial, perm) -> ReidImages:
    paths, pids, camids = [], [], []
    for cam in cams:  # camera-major, as the official get_testing_set.m and SAAI's get_gallery_names
        for pid in sorted(ids):
            per_id = perm[cam]
            matrix = per_id[pid - 1] if 0 < pid <= len(per_id) else None
            if matrix is None:
                continue
            if trial >= matrix.shape[0]:
                raise ValueError(f"rand_perm_cam{{{cam}}}{{{pid}}} has {matrix.shape[0]} trials; asked for {trial}")
            folder = root / f"cam{cam}" / f"{pid:04d}"
            by_number = {p.stem: p for p in list_images(folder)} if folder.is_dir() else {}
            for number in matrix[trial, :shots]:
                image = by_number.get(f"{number:04d}")
                if image is None:
                    raise FileNotFoundError(
                        f"rand_perm_cam{{{cam}}}{{{pid}}} selects image {number:04d}, not found in {folder}"
                    )
                paths.append(str(image))
                pids.append(pid)
                camids.append(cam)
    return ReidImages.from_lists(paths, pids, camids)
