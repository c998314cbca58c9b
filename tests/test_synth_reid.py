"""Synthetic SYSU-MM01 and RegDB: read unchanged by the readers, deterministic, IR without colour, CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlalign.cli import main
from vlalign.commands.synth import REID_DEFAULTS
from vlalign.data.regdb import regdb_split, regdb_test
from vlalign.data.sysu import load_rand_perm_cam, read_id_file, sysu_gallery, sysu_query, sysu_train
from vlalign.synth import regdb as synth_regdb
from vlalign.synth import sysu as synth_sysu
from vlalign.synth.regdb import generate_regdb
from vlalign.synth.sysu import MATERIALS, generate_sysu, sample_person


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def sysu(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "SYSU-MM01"
    generate_sysu(root, num_ids=6, seed=3)
    return root


def test_sysu_is_read_by_the_reader(sysu):
    test_ids = read_id_file(sysu / "exp" / "test_id.txt")
    train_ids = read_id_file(sysu / "exp" / "train_id.txt") + read_id_file(sysu / "exp" / "val_id.txt")
    assert sorted(test_ids + train_ids) == list(range(1, 7)) and len(test_ids) == 1
    query = sysu_query(sysu)
    assert len(query) > 0 and set(query.pids.tolist()) == set(test_ids) and set(query.camids.tolist()) <= {3, 6}
    perm = load_rand_perm_cam(sysu / "exp" / "rand_perm_cam.mat")
    for sampling in ("seeded", "official"):
        for shots in (1, 10):
            gallery = sysu_gallery(sysu, "all", shots, trial=9, sampling=sampling, perm=perm)
            cams = [c for c in (1, 2, 4, 5) if (sysu / f"cam{c}" / f"{test_ids[0]:04d}").is_dir()]
            assert sorted(gallery.camids.tolist()) == sorted(cams * shots)  # >= 10 images per visible folder
    visible, infrared = sysu_train(sysu)
    assert set(visible.pids.tolist()) == set(infrared.pids.tolist()) == set(train_ids)
    with Image.open(visible.paths[0]) as image:
        assert image.size == (64, 128) and image.format == "JPEG" and image.mode == "RGB"


def test_ir_images_are_single_intensity(sysu):
    for cam in (3, 6):
        for path in sorted((sysu / f"cam{cam}").rglob("*.jpg"))[:20]:
            with Image.open(path) as image:
                assert image.mode == "RGB"  # 3-channel JPEGs, as the release stores its IR crops
                pixels = np.asarray(image)
            assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    colourful = [np.asarray(Image.open(p)).std(axis=2).mean() for p in sorted((sysu / "cam1").rglob("*.jpg"))[:5]]
    assert min(colourful) > 2


def test_sysu_same_seed_same_bytes(sysu, tmp_path):
    generate_sysu(tmp_path / "again", num_ids=6, seed=3)
    assert _digest(tmp_path / "again") == _digest(sysu)
    generate_sysu(tmp_path / "other", num_ids=6, seed=4)
    assert _digest(tmp_path / "other") != _digest(sysu)


def test_ir_intensity_follows_the_material_not_the_colour():
    people = [sample_person(np.random.default_rng([0, i])) for i in range(400)]
    luminance = np.array([p.upper.rgb @ [0.299, 0.587, 0.114] for p in people])
    nir = np.array([p.upper.nir for p in people])
    assert abs(np.corrcoef(luminance, nir)[0, 1]) < 0.15
    by_material = {m: np.mean([p.upper.nir for p in people if p.upper.material == m]) for m in MATERIALS}
    assert by_material["cotton"] > by_material["denim"] > by_material["leather"]


def test_regdb_is_read_by_the_reader_and_deterministic(tmp_path):
    root = tmp_path / "RegDB"
    generate_regdb(root, num_ids=5, seed=1)
    for trial in range(1, 11):
        query, gallery = regdb_test(root, trial, "thermal_to_visible")
        assert len(query) == len(gallery) == 30 and query.pids.tolist() == gallery.pids.tolist()
        train = regdb_split(root, trial, "train", "visible")
        assert len(train) == 20 and sorted(set(train.pids.tolist())) == [0, 1]
        train_people = {Path(p).parent.name for p in train.paths}
        assert not train_people & {Path(p).parent.name for p in query.paths}
        # the i-th visible and thermal images of a person are one aligned pair: same frame number
        pairs = [(Path(v).name.split("_")[3], Path(t).name.split("_")[3]) for v, t in zip(gallery.paths, query.paths)]
        assert all(v == t for v, t in pairs)
    with Image.open(query.paths[0]) as image:
        pixels = np.asarray(image)
    assert image.format == "BMP" and pixels.shape == (128, 64, 3) and (pixels == pixels[..., :1]).all()
    generate_regdb(tmp_path / "again", num_ids=5, seed=1)
    assert _digest(tmp_path / "again") == _digest(root)


def test_cli_writes_both_and_shows_the_library_defaults(tmp_path, capsys):
    assert REID_DEFAULTS["sysu"] == {"num_ids": synth_sysu.DEFAULT_NUM_IDS, "seed": synth_sysu.DEFAULT_SEED}
    assert REID_DEFAULTS["regdb"] == {"num_ids": synth_regdb.DEFAULT_NUM_IDS, "seed": synth_sysu.DEFAULT_SEED}
    assert main(["synth", "sysu", "--out", str(tmp_path / "s"), "--num-ids", "3", "--seed", "5"]) == 0
    assert '"num_ids": 3' in capsys.readouterr().out and (tmp_path / "s" / "exp" / "test_id.txt").is_file()
    assert main(["synth", "regdb", "--out", str(tmp_path / "r"), "--num-ids", "2"]) == 0
    assert len(regdb_split(tmp_path / "r", 10, "test", "thermal")) == 10
    assert main(["synth", "sysu", "--out", str(tmp_path / "x"), "--num-ids", "2"]) == 2  # a clear error
    assert "num_ids must be >= 3" in capsys.readouterr().err
