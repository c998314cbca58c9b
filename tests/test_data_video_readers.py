"""Ref-DAVIS17, A2D-Sentences and JHMDB-Sentences readers, on fixtures written in each release's layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from vlalign.data.a2d import A2DSentences, extract_frames, image_id
from vlalign.data.clips import ReferringClips
from vlalign.data.jhmdb import JHMDBSentences
from vlalign.data.ref_davis import RefDAVIS17, annotator_of

H, W = 6, 10  # non-square: a mask read without its transposition would not fit


def write_image(path, value=100, size=(H, W)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)


def box(top, left, height=2, width=3):
    mask = np.zeros((H, W), bool)
    mask[top : top + height, left : left + width] = True
    return mask


# ---------------------------------------------------------------------------------------------------- Ref-DAVIS17
def write_davis(root):
    davis = root / "DAVIS"
    (davis / "ImageSets" / "2017").mkdir(parents=True)
    (davis / "ImageSets" / "2017" / "train.txt").write_text("bike-packing\n")
    (davis / "ImageSets" / "2017" / "val.txt").write_text("classic-car\ndogs-scale\n")
    for video in ("bike-packing", "classic-car", "dogs-scale"):
        for i in range(3):
            write_image(davis / "JPEGImages" / "480p" / video / f"{i:05d}.jpg")
            labels = box(0, i).astype(np.uint8) + 2 * box(3, 6).astype(np.uint8)
            png = Image.fromarray(labels, mode="P")
            png.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (253 * 3))
            path = davis / "Annotations_unsupervised" / "480p" / video / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            png.save(path)
    text = root / "davis_text_annotations"
    text.mkdir()
    # the misspelt names of the real files; blank lines; the annot2 files are latin-1
    (text / "Davis17_annot1.txt").write_text(
        'clasic-car 1 "a red car"\nclasic-car 2 "the café  sign"\n\ndog-scale 1 "a dog"\nbike-packing 1 "a bike"\n',
        encoding="utf-8")  # fmt: skip
    (text / "Davis17_annot1_full_video.txt").write_text(
        'classic-car 2 "sign of the café"\nclasic-car 1 "car driving away"\ndogs-scale 1 "dog walking"\n',
        encoding="utf-8")  # fmt: skip
    (text / "Davis17_annot2.txt").write_text(
        'clasic-car 1 "voiture rouge é"\nclasic-car 2 "a sign"\ndog-scale 1 "small dog"\n', encoding="latin-1")
    (text / "Davis17_annot2_full_video.txt").write_text('clasic-car 2 "the sign"\n', encoding="latin-1")
    return root


@pytest.fixture
def davis(tmp_path):
    return write_davis(tmp_path / "ref-davis")


def test_ref_davis_expressions(davis):
    reader = RefDAVIS17(davis, "val")
    got = [(e.video, e.exp_id, e.obj_id, e.text) for e in reader.expressions]
    assert got == [
        ("classic-car", "0", 1, "a red car"), ("classic-car", "1", 1, "car driving away"),
        ("classic-car", "2", 1, "voiture rouge é"),  # latin-1 decoded; annotator 3 did not describe object 1
        ("classic-car", "4", 2, "the café sign"), ("classic-car", "5", 2, "sign of the café"),
        ("classic-car", "6", 2, "a sign"), ("classic-car", "7", 2, "the sign"),
        ("dogs-scale", "0", 1, "a dog"), ("dogs-scale", "1", 1, "dog walking"), ("dogs-scale", "2", 1, "small dog"),
    ]  # fmt: skip
    assert [annotator_of(e) for e in reader.expressions] == [0, 1, 2, 0, 1, 2, 3, 0, 1, 2]
    assert reader.expressions[0].frames == ["00000", "00001", "00002"]
    np.testing.assert_array_equal(reader.load_mask("classic-car", "00002", 1), box(0, 2))
    np.testing.assert_array_equal(reader.load_mask("classic-car", "00002", 2), box(3, 6))
    assert reader.target_frames(reader.expressions[3]) == ["00000", "00001", "00002"]
    only = RefDAVIS17(davis, "val", annotators=(2,))
    assert [(e.video, e.exp_id) for e in only.expressions] == [("classic-car", "2"), ("classic-car", "6"),
                                                               ("dogs-scale", "2")]  # fmt: skip
    assert [e.video for e in RefDAVIS17(davis, "train").expressions] == ["bike-packing"]
    clips = ReferringClips(reader, num_frames=2, input_size=8, mode="frames")
    assert len(clips) == 10 * 3 and clips[0]["valid"].all()


def test_ref_davis_errors(davis):
    text = davis / "davis_text_annotations"
    (text / "Davis17_annot2.txt").write_text('clasic-car 1 "voiture"\nclasic-car\n', encoding="latin-1")
    with pytest.raises(ValueError, match=r"Davis17_annot2\.txt: line 2"):
        RefDAVIS17(davis, "val")
    (text / "Davis17_annot2.txt").write_text('clasic-car x "voiture"\n', encoding="latin-1")
    with pytest.raises(ValueError, match="object id"):
        RefDAVIS17(davis, "val")
    (text / "Davis17_annot1.txt").write_bytes(b'clasic-car 1 "caf\xe9"\n')  # latin-1 bytes in a utf-8 file
    with pytest.raises(ValueError, match=r"Davis17_annot1\.txt: not utf-8-sig"):
        RefDAVIS17(davis, "val")
    (text / "Davis17_annot1.txt").unlink()
    with pytest.raises(FileNotFoundError, match="Davis17_annot1.txt"):
        RefDAVIS17(davis, "val")
    with pytest.raises(ValueError, match="annotators"):
        RefDAVIS17(davis, "val", annotators=(4,))


# ---------------------------------------------------------------------------------------------------- A2D
def write_h5(path, ids, masks):
    """As MATLAB v7.3 writes them: 'instance' a 1 x N double row, 'reMask' N x W x H (W x H for one)."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    stored = np.stack(masks).transpose(0, 2, 1).astype(np.uint8)
    with h5py.File(path, "w") as handle:
        handle["instance"] = np.asarray([ids], dtype=np.float64)
        handle["reMask"] = stored[0] if len(ids) == 1 else stored


def write_a2d(root):
    release, text = root / "Release", root / "text_annotations"
    release.mkdir(parents=True)
    text.mkdir()
    (release / "videoset.csv").write_text("vidA,11,0,0,6,10,4,2,1\nvidB,22,0,0,6,10,2,1,0\nvidM,33,0,0,6,10,2,1,1\n")
    (text / "a2d_annotation.txt").write_text(
        'video_id,instance_id,query\nvidA,1,"man, running"\nvidA,2,dog  jumping\nvidA,1 (copy),duplicate\n'
        "vidB,1,a bird\nvidM,1,missed video\n")  # fmt: skip
    (text / "a2d_missed_videos.txt").write_text("vidM\n")
    instances = text / "a2d_annotation_with_instances"
    write_h5(instances / "vidA" / "00002.h5", [1, 2], [box(0, 1), box(3, 5)])
    write_h5(instances / "vidA" / "00004.h5", [2], [box(4, 7)])
    write_h5(instances / "vidB" / "00001.h5", [1], [box(1, 1)])
    for video, count in (("vidA", 4), ("vidB", 2)):
        for k in range(1, count + 1):
            write_image(release / "pngs320H" / video / f"{k:05d}.png", value=10 * k)
    return root


@pytest.fixture
def a2d(tmp_path):
    pytest.importorskip("h5py")
    return write_a2d(tmp_path / "a2d_sentences")


def test_a2d_reader(a2d):
    reader = A2DSentences(a2d, "test")
    got = [(e.video, e.exp_id, e.obj_id, e.text) for e in reader.expressions]
    assert got == [("vidA", "0", 1, "man, running"), ("vidA", "1", 2, "dog jumping")]  # copy row, vidM and vidB out
    assert reader.expressions[0].frames == ["00001", "00002", "00003", "00004"]
    np.testing.assert_array_equal(reader.load_mask("vidA", "00002", 1), box(0, 1))  # N x W x H transposed
    np.testing.assert_array_equal(reader.load_mask("vidA", "00004", 2), box(4, 7))  # single-instance W x H
    assert not reader.load_mask("vidA", "00004", 1).any() and not reader.load_mask("vidA", "00003", 2).any()
    assert reader.target_frames(reader.expressions[0]) == ["00002"]
    assert reader.target_frames(reader.expressions[1]) == ["00002", "00004"]
    assert image_id("vidA", "00004", 2) == "v_vidA_f_4_i_2"
    clips = ReferringClips(reader, num_frames=3, input_size=10, mode="frames")
    assert len(clips) == 3
    item = clips[2]  # instance 2 on frame 00004: centred, the frame past the end repeats the last one
    assert item["frame_names"] == ["00003", "00004", "00004"] and item["target_index"] == 1
    assert item["valid"].tolist() == [False, True, True] and item["masks"][0].sum() == 0
    assert item["masks"][1].sum() > 0
    assert [e.video for e in A2DSentences(a2d, "train").expressions] == ["vidB"]


def test_a2d_errors(a2d):
    text = a2d / "text_annotations"
    write_h5(text / "a2d_annotation_with_instances" / "vidA" / "00002.h5", [1, 2], [box(0, 1)] * 2)
    import h5py

    with h5py.File(text / "a2d_annotation_with_instances" / "vidA" / "00002.h5", "a") as handle:
        del handle["reMask"]
        handle["reMask"] = np.zeros((3, W, H))
    with pytest.raises(ValueError, match=r"00002\.h5: 'reMask' has shape \(3, 10, 6\)"):
        A2DSentences(a2d, "test").load_mask("vidA", "00002", 1)
    (text / "a2d_annotation.txt").write_text("vid,instance,query\n")
    with pytest.raises(ValueError, match="header"):
        A2DSentences(a2d, "test")
    (a2d / "Release" / "videoset.csv").write_text("vidA,11,0\n")
    with pytest.raises(ValueError, match=r"videoset\.csv: line 1: expected 9 columns"):
        A2DSentences(a2d, "test")


def test_a2d_extract_frames(tmp_path):
    cv2 = pytest.importorskip("cv2")
    clips = tmp_path / "Release" / "clips320H"
    clips.mkdir(parents=True)
    writer = cv2.VideoWriter(str(clips / "vidA.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 6, (16, 8))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write mp4")
    for k in range(3):
        writer.write(np.full((8, 16, 3), 40 * (k + 1), np.uint8))
    writer.release()
    assert extract_frames(tmp_path) == 3
    frames = sorted(p.name for p in (tmp_path / "Release" / "pngs320H" / "vidA").iterdir())
    assert frames == ["00001.png", "00002.png", "00003.png"]
    assert extract_frames(tmp_path) == 0  # done already


# ---------------------------------------------------------------------------------------------------- JHMDB
def write_jhmdb(root):
    root.mkdir(parents=True)
    (root / "jhmdb_annotation.txt").write_text('video_id,query\nrun_1,man  running\njump_1,"girl, jumping"\n')
    for action, video, frames, masked in (("run", "run_1", 5, 4), ("jump", "jump_1", 4, 4)):
        for k in range(1, frames + 1):
            write_image(root / "Rename_Images" / action / video / f"{k:05d}.png")
        part = np.stack([box(k % 4, k) for k in range(masked)], axis=2).astype(np.uint8)  # H x W x T
        (root / "puppet_mask" / action / video).mkdir(parents=True)
        savemat(root / "puppet_mask" / action / video / "puppet_mask.mat", {"part_mask": part})
    return root


@pytest.fixture
def jhmdb(tmp_path):
    return write_jhmdb(tmp_path / "jhmdb_sentences")


def test_jhmdb_reader(jhmdb):
    reader = JHMDBSentences(jhmdb, seed=3)
    assert [(e.video, e.exp_id, e.obj_id, e.text) for e in reader.expressions] == [
        ("run_1", "0", 1, "man running"), ("jump_1", "1", 1, "girl, jumping")]  # fmt: skip
    run = reader.expressions[0]
    assert run.frames == ["00001", "00002", "00003", "00004", "00005"]
    np.testing.assert_array_equal(reader.load_mask("run_1", "00003", 1), box(2, 2))  # part_mask[:, :, 2]
    assert reader.annotation_path("run_1", "00005") is None and not reader.load_mask("run_1", "00005", 1).any()
    assert reader.target_frames(run) == run.frames[:4]
    chosen = reader.eval_frames(run)
    assert len(chosen) == 3 and chosen == sorted(chosen) and set(chosen) <= set(run.frames[:4])
    assert JHMDBSentences(jhmdb, seed=3).eval_frames(run) == chosen
    clips = ReferringClips(reader, num_frames=2, input_size=8, mode="frames")
    assert len(clips) == 6 and clips[0]["masks"].sum() > 0


def test_jhmdb_frozen_samples(jhmdb):
    metadata = [["run_1", "/their/disk/Rename_Images/run/run_1/00004.png", "x.mat", 5, "man running"],
                ["run_1", "/their/disk/Rename_Images/run/run_1/00001.png", "x.mat", 5, "man running"],
                ["jump_1", "C:\\data\\jump_1\\00002.png", "x.mat", 4, "girl, jumping"]]  # fmt: skip
    (jhmdb / "samples.json").write_text(json.dumps(metadata))
    reader = JHMDBSentences(jhmdb, samples_metadata=jhmdb / "samples.json")
    assert [reader.eval_frames(e) for e in reader.expressions] == [["00001", "00004"], ["00002"]]
    clips = ReferringClips(reader, num_frames=3, input_size=8, mode="frames")
    assert [(c["video"], c["target_frame"]) for c in clips] == [("run_1", "00001"), ("run_1", "00004"),
                                                                ("jump_1", "00002")]  # fmt: skip


def test_jhmdb_errors(jhmdb):
    (jhmdb / "puppet_mask" / "run" / "run_1" / "puppet_mask.mat").write_bytes(b"not a mat file")
    with pytest.raises(ValueError, match=r"puppet_mask\.mat: not a readable MATLAB"):
        JHMDBSentences(jhmdb).load_mask("run_1", "00001", 1)
    savemat(jhmdb / "puppet_mask" / "run" / "run_1" / "puppet_mask.mat", {"other": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="part_mask"):
        JHMDBSentences(jhmdb).load_mask("run_1", "00001", 1)
    (jhmdb / "jhmdb_annotation.txt").write_text("video_id,query\nswim_9,a swimmer\n")
    with pytest.raises(FileNotFoundError, match="swim_9"):
        JHMDBSentences(jhmdb)
