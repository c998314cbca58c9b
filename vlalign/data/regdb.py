"""RegDB reader: the 10 trials of index files, and both test directions named explicitly.

Layout (Dongguk "DBPerson-Recog-DB1" as distributed with the AGW code):

    ROOT/Visible/{pid}/{gender}_{view}_v_{frame:05d}_{pid}.bmp
    ROOT/Thermal/{pid}/{gender}_{view}_t_{frame:05d}_{pid}.bmp
    ROOT/idx/{train,test}_{visible,thermal}_{trial}.txt      trial 1..10; lines "relative/path.bmp label"

Each trial splits the 412 identities 206 / 206 (10 visible + 10 thermal images each); labels in the index
files are per-trial relabelled ids, so query and gallery labels of a trial are comparable but not across
trials. Repositories disagree on what their flags mean (AGW's `--tvsearch` vs DEEN's defaults), so the
direction is named here: "visible_to_thermal" = queries are `test_visible_{t}`, gallery `test_thermal_{t}`;
"thermal_to_visible" the reverse. Both sets are used whole (no sampling); evaluate with
`vlalign.metrics.reid.eval_regdb`, and average the 10 trials (each with the model trained on its split).

camids: 1 visible, 2 thermal (one camera pair; AGW's eval_regdb uses the same numbers internally).
"""

from __future__ import annotations

from pathlib import Path

from vlalign.data.sysu import ReidImages

__all__ = ["DIRECTIONS", "MODALITY_CAMID", "TRIALS", "read_index", "regdb_split", "regdb_test"]

TRIALS = tuple(range(1, 11))
MODALITY_CAMID = {"visible": 1, "thermal": 2}
DIRECTIONS = {"visible_to_thermal": ("visible", "thermal"), "thermal_to_visible": ("thermal", "visible")}


def read_index(path: str | Path, root: str | Path | None = None, check_files: bool = True):
    """Parse an index file of "relative/path label" lines -> (absolute paths, labels).

    Paths are relative to `root` (default: the folder above `idx/`). Blank lines are skipped; any other
    line that is not exactly a path and an integer raises ValueError naming the file and line. With
    `check_files`, every image must exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"index file not found: {path}")
    root = Path(root) if root is not None else path.parent.parent
    paths, labels = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise ValueError(f"{path}, line {number}: expected 'relative/path label', got {line.strip()!r}")
        image = root / fields[0]
        if check_files and not image.is_file():
            raise FileNotFoundError(f"{path}, line {number}: image {image} does not exist")
        paths.append(str(image))
        labels.append(int(fields[1]))
    if not paths:
        raise ValueError(f"{path}: no entries")
    return paths, labels


def regdb_split(root: str | Path, trial: int, split: str, modality: str) -> ReidImages:
    """One index file: `idx/{split}_{modality}_{trial}.txt` with split train/test, modality visible/thermal."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if modality not in MODALITY_CAMID:
        raise ValueError(f"modality must be 'visible' or 'thermal', got {modality!r}")
    if trial not in TRIALS:
        raise ValueError(f"RegDB trials are numbered 1..10, got {trial!r}")
    root = Path(root)
    paths, labels = read_index(root / "idx" / f"{split}_{modality}_{trial}.txt", root)
    return ReidImages.from_lists(paths, labels, [MODALITY_CAMID[modality]] * len(paths))


def regdb_test(root: str | Path, trial: int, direction: str) -> tuple[ReidImages, ReidImages]:
    """(query, gallery) of one trial for "visible_to_thermal" or "thermal_to_visible"."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {sorted(DIRECTIONS)}, got {direction!r}")
    query_modality, gallery_modality = DIRECTIONS[direction]
    query = regdb_split(root, trial, "test", query_modality)
    gallery = regdb_split(root, trial, "test", gallery_modality)
    if not set(query.pids.tolist()) & set(gallery.pids.tolist()):
        raise ValueError(f"RegDB trial {trial}: test_visible and test_thermal labels do not overlap")
    return query, gallery
