"""SYSU-MM01, RegDB and LLCM readers on tiny layouts written here, including a fake official rand_perm_cam.mat."""

from __future__ import annotations

import random
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import load_benchmark
from PIL import Image
from scipy.io import savemat

from vlalign.data.llcm import llcm_gallery, llcm_query, llcm_ranking, llcm_test, llcm_train
from vlalign.data.regdb import read_index, regdb_split, regdb_test
from vlalign.data.sysu import load_rand_perm_cam, read_id_file, sysu_gallery, sysu_query, sysu_train

# (pid, cam) -> number of images; pid 4 is a test identity seen by no IR camera, pid 2 has 12 images in cam 1
SYSU = {(1, 1): 3, (1, 4): 2, (1, 3): 2, (2, 1): 12, (2, 2): 4, (2, 6): 3, (3, 5): 2, (3, 3): 1, (4, 2): 2,
        (5, 1): 2, (5, 3): 2, (6, 6): 2, (6, 4): 1}  # fmt: skip
TEST_IDS, TRAIN_IDS, VAL_IDS = [1, 2, 3, 4], [5], [6]


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 8), (90, 90, 90)).save(path)


def _perm_mat(path: Path, rows: dict[tuple[int, int], np.ndarray], num_ids: int) -> None:
    """The official structure: a 6x1 cell of 1 x num_ids cells of (10, n) double matrices (empty if absent)."""
    top = np.empty((6, 1), dtype=object)
    for cam in range(1, 7):
        cell = np.empty((1, num_ids), dtype=object)
        for pid in range(1, num_ids + 1):
            cell[0, pid - 1] = rows.get((cam, pid), np.zeros((0, 0)))
        top[cam - 1, 0] = cell
    savemat(str(path), {"rand_perm_cam": top})


@pytest.fixture
def sysu(tmp_path: Path) -> Path:
    root = tmp_path / "SYSU-MM01"
    for cam in range(1, 7):
        (root / f"cam{cam}").mkdir(parents=True)
    for (pid, cam), n in SYSU.items():
        for k in range(1, n + 1):
            _image(root / f"cam{cam}" / f"{pid:04d}" / f"{k:04d}.jpg")
    (root / f"cam1/{2:04d}/Thumbs.db").write_bytes(b"not an image")  # ignored
    (root / "exp").mkdir()
    for name, ids in (("test", TEST_IDS), ("train", TRAIN_IDS), ("val", VAL_IDS)):
        (root / "exp" / f"{name}_id.txt").write_text(",".join(map(str, ids)) + "\n")
    rng = np.random.default_rng(0)
    rows = {
        (cam, pid): np.stack([rng.permutation(n) + 1 for _ in range(10)]).astype(float)
        for (pid, cam), n in SYSU.items()
    }
    _perm_mat(root / "exp" / "rand_perm_cam.mat", rows, num_ids=6)
    return root


def _key(path: str) -> tuple[int, int, int]:
    p = Path(path)
    return int(p.parent.parent.name[3:]), int(p.parent.name), int(p.stem)  # cam, pid, image number


def test_query_is_every_ir_image_of_the_test_ids(sysu):
    q = sysu_query(sysu)
    assert [_key(p) for p in q.paths] == [(3, 1, 1), (3, 1, 2), (6, 2, 1), (6, 2, 2), (6, 2, 3), (3, 3, 1)]
    np.testing.assert_array_equal(q.pids, [1, 1, 2, 2, 2, 3])
    np.testing.assert_array_equal(q.camids, [3, 3, 6, 6, 6, 3])


def test_seeded_single_shot_is_the_agw_draw(sysu):
    for trial in (0, 7):
        # the AGW lineage: global random.seed(trial), then one choice per existing (id, cam) folder
        random.seed(trial)
        expected = []
        for pid in sorted(TEST_IDS):
            for cam in (1, 2, 4, 5):
                folder = sysu / f"cam{cam}" / f"{pid:04d}"
                if folder.is_dir():
                    names = sorted(str(folder / n) for n in (f.name for f in folder.iterdir()) if n.endswith(".jpg"))
                    expected.append(random.choice(names))
        g = sysu_gallery(sysu, "all", shots=1, trial=trial)
        assert g.paths == expected
        assert [(_key(p)[1], _key(p)[0]) for p in g.paths] == list(zip(g.pids.tolist(), g.camids.tolist()))
    assert sysu_gallery(sysu, trial=3).paths == sysu_gallery(sysu, trial=3).paths


def test_seeded_modes_and_multi_shot(sysu):
    indoor = sysu_gallery(sysu, "indoor", shots=1, trial=0)
    assert indoor.camids.tolist() == [1, 1, 2, 2] and indoor.pids.tolist() == [1, 2, 2, 4]
    multi = sysu_gallery(sysu, "all", shots=10, trial=2)
    counts = {}
    for p in multi.paths:
        cam, pid, _ = _key(p)
        counts[pid, cam] = counts.get((pid, cam), 0) + 1
    assert counts == {(1, 1): 3, (1, 4): 2, (2, 1): 10, (2, 2): 4, (3, 5): 2, (4, 2): 2}
    assert len(set(multi.paths)) == len(multi)


def test_official_permutations(sysu):
    perm = load_rand_perm_cam(sysu / "exp" / "rand_perm_cam.mat")
    assert perm[3][3] is None and perm[1][1].shape == (10, 12)  # pid 4 not in cam 3; pid 2 in cam 1
    for trial in (0, 9):
        g = sysu_gallery(sysu, "all", shots=1, trial=trial, sampling="official")
        want = [(c, p, int(perm[c][p - 1][trial, 0])) for c in (1, 2, 4, 5) for p in TEST_IDS if (p, c) in SYSU]
        assert [_key(p) for p in g.paths] == want  # camera-major, as the official code
    g = sysu_gallery(sysu, "indoor", shots=10, trial=4, sampling="official", perm=perm)
    cam1_pid2 = [_key(p)[2] for p in g.paths if _key(p)[:2] == (1, 2)]
    assert cam1_pid2 == perm[1][1][4, :10].tolist()


def test_official_errors_name_the_problem(sysu, tmp_path):
    number = int(load_rand_perm_cam(sysu / "exp" / "rand_perm_cam.mat")[1][1][0, 0])  # trial 0, cam 1, pid 2
    (sysu / f"cam1/{2:04d}/{number:04d}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=f"selects image {number:04d}, not found in .*cam1.0002"):
        sysu_gallery(sysu, sampling="official")
    (sysu / "exp" / "rand_perm_cam.mat").unlink()
    with pytest.raises(FileNotFoundError, match="rand_perm_cam.mat"):
        sysu_gallery(sysu, sampling="official")
    savemat(str(tmp_path / "other.mat"), {"something": np.zeros(3)})
    with pytest.raises(ValueError, match="no variable 'rand_perm_cam'"):
        load_rand_perm_cam(tmp_path / "other.mat")


def test_query_and_gallery_of_chosen_ids(sysu):
    """Training identities in the test protocol's roles (what a model memorised): the same draw rule."""
    q = sysu_query(sysu, ids=[5, 6])
    assert q.pids.tolist() == [5, 5, 6, 6] and q.camids.tolist() == [3, 3, 6, 6]
    g = sysu_gallery(sysu, "all", trial=1, ids=[6, 5])
    assert sorted(set(g.pids.tolist())) == [5, 6]
    assert g.paths == sysu_gallery(sysu, "all", trial=1, ids=[5, 6]).paths  # ids are sorted, as the test ids
    assert sysu_gallery(sysu, trial=0, ids=TEST_IDS).paths == sysu_gallery(sysu, trial=0).paths
    with pytest.raises(ValueError, match="seeded"):
        sysu_gallery(sysu, sampling="official", ids=[5])


def test_train_and_id_files(sysu):
    visible, infrared = sysu_train(sysu)
    assert sorted(set(visible.pids.tolist())) == [5, 6] and len(visible) == 3
    assert infrared.pids.tolist() == [5, 5, 6, 6] and infrared.camids.tolist() == [3, 3, 6, 6]
    bad = sysu / "exp" / "test_id.txt"
    for text, message in (("1,2\n3,4\n", "one line"), ("1,2,x", "'x' is not"), ("", "found 0"), ("1,1", "repeat")):
        bad.write_text(text)
        with pytest.raises(ValueError, match=message) as info:
            read_id_file(bad)
        assert "test_id.txt" in str(info.value)
    with pytest.raises(ValueError, match="mode"):
        sysu_gallery(sysu, mode="outdoor")
    (sysu / "cam6").rename(sysu / "cam6_moved")
    with pytest.raises(FileNotFoundError, match="missing folder.*cam6"):
        sysu_query(sysu)


@pytest.fixture
def regdb(tmp_path: Path) -> Path:
    root = tmp_path / "RegDB"
    for trial in (1, 2):
        for split, pids in (("train", [3, 1]), ("test", [2, 4])):
            for modality, folder, letter in (("visible", "Visible", "v"), ("thermal", "Thermal", "t")):
                lines = []
                for label, pid in enumerate(pids if trial == 1 else pids[::-1]):
                    for frame in (7, 9):
                        name = f"{folder}/{pid}/male_front_{letter}_{pid * 100 + frame:05d}_{pid}.bmp"
                        _image(root / name)
                        lines.append(f"{name} {label}")
                (root / "idx" / f"{split}_{modality}_{trial}.txt").parent.mkdir(exist_ok=True)
                (root / "idx" / f"{split}_{modality}_{trial}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_regdb_directions(regdb):
    query, gallery = regdb_test(regdb, 1, "visible_to_thermal")
    assert all("/Visible/" in p for p in query.paths) and all("/Thermal/" in p for p in gallery.paths)
    assert query.pids.tolist() == [0, 0, 1, 1] and set(query.camids.tolist()) == {1}
    assert Path(query.paths[2]).name == "male_front_v_00407_4.bmp"
    query, gallery = regdb_test(regdb, 2, "thermal_to_visible")
    assert all("/Thermal/" in p for p in query.paths) and gallery.camids.tolist() == [1] * 4
    assert Path(query.paths[0]).name == "male_front_t_00407_4.bmp"
    train = regdb_split(regdb, 1, "train", "thermal")
    assert len(train) == 4 and set(train.camids.tolist()) == {2}


def test_regdb_errors(regdb):
    index = regdb / "idx" / "test_visible_1.txt"
    index.write_text("Visible/2/male_front_v_00207_2.bmp 0\nVisible/2/male_front_v_00209_2.bmp\n")
    with pytest.raises(ValueError, match=r"test_visible_1.txt, line 2: expected 'relative/path label'"):
        read_index(index)
    index.write_text("Visible/2/missing.bmp 0\n")
    with pytest.raises(FileNotFoundError, match="line 1: image .*missing.bmp does not exist"):
        read_index(index)
    with pytest.raises(FileNotFoundError, match="test_visible_3.txt"):
        regdb_test(regdb, 3, "visible_to_thermal")
    with pytest.raises(ValueError, match="1..10"):
        regdb_split(regdb, 0, "test", "visible")
    with pytest.raises(ValueError, match="direction"):
        regdb_test(regdb, 1, "v2t")


@pytest.fixture
def llcm(tmp_path: Path) -> Path:
    root = tmp_path / "LLCM"
    for modality in ("vis", "nir"):
        for pid, cam in ((1, 2), (1, 5), (2, 2), (3, 9)):
            for k in range(3):
                _image(root / f"test_{modality}" / f"cam{cam}" / f"{pid:04d}" / f"{pid:04d}_c{cam:02d}_{k}.jpg")
        _image(root / f"test_{modality}" / "cam3" / "0001" / "x.jpg")  # NIR camera 3 is not in the protocol
        lines = []
        for pid in (7, 8):
            name = f"{modality}/{pid:04d}/{pid:04d}_c0{pid - 5}_s1_f1_{modality}.jpg"
            _image(root / name)
            lines.append(f"{name} {pid - 7}")
        (root / "idx").mkdir(exist_ok=True)
        (root / "idx" / f"train_{modality}.txt").write_text("\n".join(lines))
    (root / "idx" / "test_id.txt").write_text("3,1,2")
    return root


def test_llcm_protocol(llcm):
    query, gallery = llcm_test(llcm, "ir_to_vis", trial=1)
    assert all("/test_nir/" in p for p in query.paths) and all("/test_vis/" in p for p in gallery.paths)
    assert len(query) == 12 and 3 not in query.camids.tolist()
    random.seed(1)  # DEEN: random.seed(trial), ids in order, cameras in order, one choice per folder
    want = []
    for pid, cam in ((1, 2), (1, 3), (1, 5), (2, 2), (3, 9)):
        folder = llcm / "test_vis" / f"cam{cam}" / f"{pid:04d}"
        want.append(random.choice(sorted(str(p) for p in folder.iterdir())))
    assert gallery.paths == want and gallery.camids.tolist() == [2, 3, 5, 2, 9]
    query, gallery = llcm_test(llcm, "vis_to_ir", trial=0)
    assert len(query) == 13 and gallery.camids.tolist() == [2, 5, 2, 9]
    assert llcm_gallery(llcm, "nir", 4).paths == llcm_gallery(llcm, "nir", 4).paths
    assert len(llcm_query(llcm, "vis")) == 13
    visible, infrared = llcm_train(llcm)
    assert visible.pids.tolist() == [0, 1] and infrared.camids.tolist() == [2, 3]
    with pytest.raises(ValueError, match="modality"):
        llcm_query(llcm, "rgb")


def test_llcm_ranking_follows_deen_roles(llcm):
    # DEEN test.py, test_mode [2, 1] (VIS->IR): eval_llcm(-(gallery @ query.T), gallery_label, query_label, ...),
    # so the sampled NIR images are the probes and every visible test image is ranked; [1, 2] keeps the roles
    probes, ranked = llcm_ranking(llcm, "vis_to_ir", trial=2)
    assert probes.paths == llcm_gallery(llcm, "nir", 2).paths and all("/test_nir/" in p for p in probes.paths)
    assert ranked.paths == llcm_query(llcm, "vis").paths and len(ranked) == 13
    probes, ranked = llcm_ranking(llcm, "ir_to_vis", trial=2)
    assert probes.paths == llcm_query(llcm, "nir").paths and ranked.paths == llcm_gallery(llcm, "vis", 2).paths


def _path_features(model, paths, batch_size=64, raw_proj=False):
    """A fixed random 8-d feature per path (stands in for extract_features: which set ranks which matters)."""
    rows = [np.random.default_rng(zlib.crc32(str(p).encode())).standard_normal(8) for p in paths]
    return np.asarray(rows, dtype=np.float32).reshape(len(paths), 8)


def test_evaluate_reid_scores_llcm_in_deen_roles(llcm, monkeypatch):
    import vlalign.reid as reid
    from vlalign.metrics.reid import eval_llcm

    monkeypatch.setattr(reid, "extract_features", _path_features)
    results = reid.evaluate_reid(None, "llcm", llcm, trials=2)
    vis_to_ir, ir_to_vis = results["LLCM vis to ir"], results["LLCM ir to vis"]
    assert (vis_to_ir["queries"], vis_to_ir["gallery"]) == (4, 13)  # 4 sampled NIR probes, 13 visible images
    assert (ir_to_vis["queries"], ir_to_vis["gallery"]) == (12, 5)
    every_vis = llcm_query(llcm, "vis")
    want = []
    for t in range(2):
        nir = llcm_gallery(llcm, "nir", t)
        distmat = -(_path_features(None, nir.paths) @ _path_features(None, every_vis.paths).T)
        want.append(eval_llcm(distmat, nir.pids, every_vis.pids, nir.camids, every_vis.camids))
    assert vis_to_ir["mAP"] == pytest.approx(np.mean([w[1] for w in want]), abs=1e-12)
    assert vis_to_ir["mINP"] == pytest.approx(np.mean([w[2] for w in want]), abs=1e-12)
    assert vis_to_ir["rank1"] == pytest.approx(np.mean([w[0][0] for w in want]), abs=1e-6)


def test_identity_count_benchmark_scores_only_identities_no_model_saw(tmp_path):
    """reid_identity_count.py: pids above the small set's size, from the big set's test split, seeded."""
    bench = load_benchmark("reid_identity_count.py")
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "test_id.txt").write_text("3,7,301,305,400,999,12")
    ids = bench.unseen_ids(tmp_path, 300, 3)
    assert len(ids) == 3 and set(ids) <= {301, 305, 400, 999} and ids == sorted(ids)
    assert ids == bench.unseen_ids(tmp_path, 300, 3)  # the same people for every model and run
    assert bench.unseen_ids(tmp_path, 300, 4) == [301, 305, 400, 999]
    with pytest.raises(SystemExit, match="only 4 test identities above pid 300"):
        bench.unseen_ids(tmp_path, 300, 5)
