from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import warnings

import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask
from refer_fixtures import compressed_rle, uncompressed_rle, write_py2_pickle, write_refer_dataset

from vlalign.data.images import ImageError
from vlalign.data.masks import _decode_compressed_counts, decode_segmentation
from vlalign.data.refer import ReferDataset, load_refs
from vlalign.data.transforms import ResizeSquare


@pytest.fixture(scope="module")
def unc(tmp_path_factory):
    return write_refer_dataset(tmp_path_factory.mktemp("refcoco"), split_by="unc", num_images=6)


@pytest.fixture
def small(tmp_path):
    """A fresh 2-image dataset (splits train, val) that a test may damage."""
    return write_refer_dataset(tmp_path / "data", num_images=2)


def _edit_instances(written, edit):
    path = written["instances_path"]
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content))


@pytest.mark.parametrize("split", ["train", "val", "testA", "testB"])
def test_eval_mode_round_trips_every_field(unc, split):
    ds = ReferDataset(unc["data_dir"], split, mode="eval")
    expected_ids = unc["splits"][split]["sent_ids"]
    assert len(ds) == ds.num_sentences == len(expected_ids)
    assert ds.num_refs == len(unc["splits"][split]["ref_ids"])
    assert ds.sent_ids == expected_ids
    assert ds.categories == {1: "box", 2: "pair", 3: "disk"}
    assert [r["ref_id"] for r in ds.refs] == unc["splits"][split]["ref_ids"]
    per_image = [ann_id for image_id in unc["images"] for ann_id in ds.image_annotations(image_id)]
    assert sorted(per_image) == sorted(unc["ann_masks"])  # every annotation listed once, under its image
    with pytest.raises(KeyError, match="image_id 987654 is not in"):
        ds.image_annotations(987654)
    for index, sent_id in enumerate(expected_ids):
        item = ds[index]
        ref = next(r for r in unc["refs"] if r["ref_id"] == unc["sent_ref"][sent_id])
        info = unc["images"][ref["image_id"]]
        h, w = info["height"], info["width"]
        assert item["sent_id"] == sent_id and item["text"] == unc["sent_text"][sent_id]
        assert item["ref_id"] == ref["ref_id"] and item["image_id"] == ref["image_id"]
        assert item["orig_size"] == (h, w)
        assert item["transform"] == {"kind": "identity", "height": h, "width": w}
        assert item["image"].dtype == torch.float32 and item["image"].shape == (3, h, w)
        pixels = torch.from_numpy(info["pixels"]).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(item["image"], pixels)
        assert item["mask"].dtype == torch.float32
        np.testing.assert_array_equal(item["mask"].numpy(), unc["sent_masks"][sent_id])
        assert item["orig_mask"].dtype == np.uint8
        np.testing.assert_array_equal(item["orig_mask"], unc["sent_masks"][sent_id])
        assert ref["ann_id"] in ds.image_annotations(ref["image_id"])
        assert ref["ref_id"] in [r["ref_id"] for r in ds.refs]
        assert ds.image_info(ref["image_id"]) == {
            "file_name": info["file_name"],
            "height": h,
            "width": w,
            "path": unc["image_dir"] / info["file_name"],
        }


def test_every_segmentation_kind_matches_the_drawn_shape(unc):
    ds = ReferDataset(unc["data_dir"], "train", mode="eval")
    kinds = set()
    for split in ("train", "val", "testA", "testB"):
        ds = ReferDataset(unc["data_dir"], split, mode="eval")
        for ref_id in unc["splits"][split]["ref_ids"]:
            ann_id = next(r["ann_id"] for r in unc["refs"] if r["ref_id"] == ref_id)
            np.testing.assert_array_equal(ds.ann_mask(ann_id), unc["ann_masks"][ann_id])
            kinds.add(unc["ann_kinds"][ann_id])
    assert kinds == {"polygon", "multi_polygon", "rle", "rle_compressed"}


def test_eval_targets_need_no_images(unc, tmp_path):
    data_dir = tmp_path / "no_images"
    shutil.copytree(unc["data_dir"], data_dir, ignore=shutil.ignore_patterns("*.png"))
    ds = ReferDataset(data_dir, "val", mode="eval")
    targets = list(ds.eval_targets())
    assert [sent_id for sent_id, _ in targets] == unc["splits"]["val"]["sent_ids"]
    for sent_id, mask in targets:
        np.testing.assert_array_equal(mask, unc["sent_masks"][sent_id])
    with pytest.raises(FileNotFoundError, match=r"no_images/images/COCO_train2014_\d+\.png"):
        ds[0]


def _drawn(ds: ReferDataset, epoch: int) -> list[int]:
    ds.set_epoch(epoch)
    return [ds[i]["sent_id"] for i in range(len(ds))]


def test_train_mode_draws_one_sentence_per_ref(unc):
    ds = ReferDataset(unc["data_dir"], "train", mode="train", seed=3)
    assert len(ds) == ds.num_refs == len(unc["splits"]["train"]["ref_ids"])
    draws = {}
    for epoch in range(6):
        draws[epoch] = _drawn(ds, epoch)
        for i, ref_id in enumerate(unc["splits"]["train"]["ref_ids"]):
            ref = next(r for r in unc["refs"] if r["ref_id"] == ref_id)
            assert ds[i]["ref_id"] == ref_id and "orig_mask" not in ds[i]
            # the documented draw, so that a resumed run picks the same sentences
            k = np.random.default_rng((3, epoch, i)).integers(len(ref["sentences"]))
            assert draws[epoch][i] == ref["sentences"][k]["sent_id"]
    assert len({tuple(d) for d in draws.values()}) > 1  # the sentence changes with the epoch
    assert _drawn(ReferDataset(unc["data_dir"], "train", mode="train", seed=3), 4) == draws[4]
    other_seed = ReferDataset(unc["data_dir"], "train", mode="train", seed=4)
    assert any(_drawn(other_seed, epoch) != draws[epoch] for epoch in draws)


def test_transform_and_pickling(unc):
    ds = ReferDataset(unc["data_dir"], "testA", mode="eval", transform=ResizeSquare(32))
    ds = pickle.loads(pickle.dumps(ds))  # data-loader workers receive a pickled copy
    item = ds[0]
    h, w = item["orig_size"]
    assert item["image"].shape == (3, 32, 32) and item["mask"].shape == (32, 32)
    assert item["transform"] == {"kind": "resize_square", "size": 32, "height": h, "width": w}
    assert item["orig_mask"].shape == (h, w)


@pytest.mark.parametrize("split_by,splits", [("umd", ["test", "train", "val"]), ("google", ["train", "val"])])
def test_other_split_schemes_and_python3_pickles(tmp_path, split_by, splits):
    written = write_refer_dataset(tmp_path, split_by=split_by, num_images=3, py2_pickle=False)
    for split in splits:
        ds = ReferDataset(tmp_path, split, split_by=split_by, mode="eval")
        assert ds.sent_ids == written["splits"][split]["sent_ids"]
    with pytest.raises(ValueError, match=re.escape(f"unknown split 'testA'; available splits: {splits}")):
        ReferDataset(tmp_path, "testA", split_by=split_by)


def test_python2_byte_strings_fall_back_to_latin1(unc):
    refs = load_refs(unc["refs_path"])
    raws = [s["raw"] for r in refs for s in r["sentences"]]
    assert any(raw.endswith(" café") for raw in raws)


# errors


def test_missing_files_are_named(small, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"refs\(umd\)\.p.*present: \['refs\(unc\)\.p'\]"):
        ReferDataset(small["data_dir"], "train", split_by="umd")
    with pytest.raises(FileNotFoundError, match="elsewhere"):
        ReferDataset(small["data_dir"], "train", image_dir=tmp_path / "elsewhere")[0]
    small["instances_path"].unlink()
    with pytest.raises(FileNotFoundError, match="instances.json"):
        ReferDataset(small["data_dir"], "train")


def test_bad_arguments(small):
    with pytest.raises(ValueError, match="mode must be 'train' or 'eval'"):
        ReferDataset(small["data_dir"], "train", mode="test")
    with pytest.raises(ValueError, match=r"unknown split 'testA'; available splits: \['train', 'val'\]"):
        ReferDataset(small["data_dir"], "testA")
    ds = ReferDataset(small["data_dir"], "train")
    with pytest.raises(ValueError, match="epoch"):
        ds.set_epoch(-1)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_garbage_and_wrong_pickles(small):
    path = small["refs_path"]
    for content in (b"not a pickle at all", b"", b"\x80\x02]q\x00(K\x01"):  # garbage, empty, cut short
        path.write_bytes(content)
        with pytest.raises(ValueError, match=r"refs\(unc\)\.p: not a readable refs pickle"):
            ReferDataset(small["data_dir"], "train")
    write_py2_pickle({"refs": []}, path)
    with pytest.raises(ValueError, match=r"refs\(unc\)\.p: expected a list of refs"):
        ReferDataset(small["data_dir"], "train")
    write_py2_pickle([{"ref_id": 1, "sentences": []}], path)
    with pytest.raises(ValueError, match=r"refs\(unc\)\.p: refs\[0\]: missing field 'split'"):
        ReferDataset(small["data_dir"], "train")


class _Payload:
    """Unpickling this would create a directory: the safe loader must refuse before anything runs."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (os.makedirs, (self.target,))


def test_pickle_with_class_references_is_refused_without_running_code(small, tmp_path):
    target = tmp_path / "pwned"
    small["refs_path"].write_bytes(pickle.dumps([{"split": "train"}, _Payload(target)]))
    with pytest.raises(ValueError, match=r"refs\(unc\)\.p: the refs pickle references the global .*makedirs"):
        ReferDataset(small["data_dir"], "train")
    assert not target.exists()
    small["refs_path"].write_bytes(pickle.dumps([{"split": "train", "ids": {1, 2}}], protocol=2))
    with pytest.raises(ValueError, match=r"references the global (__builtin__|builtins)\.set"):
        load_refs(small["refs_path"])


def test_malformed_instances(small):
    small["instances_path"].write_text("{not json")
    with pytest.raises(ValueError, match="instances.json: not valid JSON"):
        ReferDataset(small["data_dir"], "train")
    small["instances_path"].write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(ValueError, match="instances.json: missing field 'categories'"):
        ReferDataset(small["data_dir"], "train")


def test_missing_image_field(small):
    _edit_instances(small, lambda c: c["images"][1].pop("height"))
    with pytest.raises(ValueError, match=r"instances.json: images\[1\]: missing field 'height'"):
        ReferDataset(small["data_dir"], "val")


def test_ref_pointing_outside_instances(small):
    ref_id, missing = small["refs"][0]["ref_id"], small["refs"][0]["ann_id"]
    _edit_instances(
        small, lambda c: c.update(annotations=[a for a in c["annotations"] if a["id"] != missing])
    )
    with pytest.raises(ValueError, match=rf"ref {ref_id}: ann_id {missing} is not in .*instances.json"):
        ReferDataset(small["data_dir"], "train")


@pytest.mark.parametrize(
    "segmentation,message",
    [
        ([[1, 2, 3, 4, 5, 6, 7]], "odd number of coordinates"),
        ([[1, 2, 3, 4]], r"no polygon has at least 3 points \(lengths \[4\]\)"),
        ([[1, 2, "x", 4, 5, 6]], "not finite numbers"),
        ([], "non-empty list of polygons"),
        ({"counts": [5], "size": [3, 3]}, r"RLE size \[3, 3\] does not match the image size"),
    ],
)
def test_bad_segmentation_names_annotation_and_file(small, segmentation, message):
    ann_id = small["refs"][0]["ann_id"]

    def edit(content):
        next(a for a in content["annotations"] if a["id"] == ann_id)["segmentation"] = segmentation

    _edit_instances(small, edit)
    ds = ReferDataset(small["data_dir"], "train", mode="eval")
    with pytest.raises(ValueError, match=rf"instances.json: annotation {ann_id}: .*{message}"):
        ds[0]
    with pytest.raises(ValueError, match=rf"annotation {ann_id}"):
        list(ds.eval_targets())


def test_rle_validation_and_compressed_decoder():
    mask = np.zeros((7, 5), np.uint8)
    mask[2:6, 1:4] = 1
    mask[0, 0] = 1
    # the pure-python decoder agrees with pycocotools' encoder on random masks
    for seed in range(5):
        m = (np.random.default_rng(seed).random((13, 11)) > 0.6).astype(np.uint8)
        assert _decode_compressed_counts(compressed_rle(m)["counts"], "x") == uncompressed_rle(m)["counts"]
    for rle in (uncompressed_rle(mask), compressed_rle(mask)):
        np.testing.assert_array_equal(decode_segmentation(rle, 7, 5, ann_id=1, source="f.json"), mask)
    # polygons: same pixels as pycocotools' own decoder (whose numpy-2 warning is silenced here)
    polygons = [[0.5, 0.5, 4.2, 1.0, 2.0, 6.3], [3.0, 4.0, 5.0, 4.0, 5.0, 7.0, 3.0, 7.0]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        reference = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polygons, 7, 5)))
    assert reference.sum() > 5
    np.testing.assert_array_equal(decode_segmentation(polygons, 7, 5), reference)
    # a zero-area part (2 points, found in real COCO files) is skipped, not read as a box
    np.testing.assert_array_equal(decode_segmentation([[0, 0, 4, 6], *polygons], 7, 5), reference)
    short = {"counts": [3, 2], "size": [7, 5]}  # pycocotools would decode uninitialised memory here
    with pytest.raises(ValueError, match=r"f.json: annotation 4: RLE counts sum to 5 pixels .* 7x5 = 35"):
        decode_segmentation(short, 7, 5, ann_id=4, source="f.json")
    with pytest.raises(ValueError, match="invalid character"):
        decode_segmentation({"counts": "5\x7f", "size": [7, 5]}, 7, 5, ann_id=4, source="f.json")
    with pytest.raises(ValueError, match="end in the middle"):
        decode_segmentation({"counts": "5P", "size": [7, 5]}, 7, 5, ann_id=4, source="f.json")


def test_corrupt_and_truncated_images_raise(small):
    ds = ReferDataset(small["data_dir"], "train", mode="eval")
    image_path = small["image_dir"] / small["images"][small["refs"][0]["image_id"]]["file_name"]
    data = image_path.read_bytes()
    image_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=rf"{image_path.name}.*cannot be decoded"):
        ds[0]
    image_path.write_bytes(b"\x00" * 100)
    with pytest.raises(ImageError, match=rf"{image_path.name}.*cannot be decoded"):
        ds[0]


def test_image_size_disagreeing_with_instances(small):
    ref = small["refs"][0]

    def edit(content):
        next(i for i in content["images"] if i["id"] == ref["image_id"])["width"] += 1

    _edit_instances(small, edit)
    ds = ReferDataset(small["data_dir"], "train", mode="eval")
    with pytest.raises(ValueError, match="masks would not align"):
        ds[0]
