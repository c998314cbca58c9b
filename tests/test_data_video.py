"""Ref-YouTube-VOS reader and the clip dataset, on fixtures written in the released layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vlalign.data.clips import ReferringClips, assign_frames, repeat_indices, sliding_windows
from vlalign.data.collate import make_collate
from vlalign.data.images import ImageError
from vlalign.data.transforms import ResizeSquare
from vlalign.data.ytvos import RefYTVOS

H, W = 24, 32  # non-square, so a transposed mask would not fit
PALETTE = [0, 0, 0, 200, 0, 0, 0, 200, 0, 0, 0, 200] + [255] * (256 * 3 - 12)


def grey(index: int) -> int:
    """Each frame is one flat grey level, so a loaded frame tells which file it came from."""
    return 20 + 30 * index


def write_frame(path, index, size=(H, W)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), grey(index), np.uint8)).save(path, quality=95)


def write_labels(path, labels):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(PALETTE)
    image.save(path)


def labels_of(frame_index, objects):
    """HxW ids: object k (1, 2, 3) is a box whose place depends on the frame; `objects` lists those present."""
    labels = np.zeros((H, W), np.int64)
    for obj in objects:
        top = 2 + 6 * (obj - 1)
        left = 2 + 3 * frame_index
        labels[top : top + 5, left : left + 4] = obj
    return labels


# vidA: 6 frames, object 1 on all of them, object 2 only on frames 2 and 3; vidB: 2 frames, object 3.
TRAIN = {
    "vidA": {"frames": [f"{5 * i:05d}" for i in range(6)], "objects": {1: range(6), 2: (2, 3)}},
    "vidB": {"frames": ["00000", "00005"], "objects": {3: (0, 1)}},
}


def write_ytvos(root, with_meta=True):
    meta_exp = {"videos": {
        "vidA": {"expressions": {"0": {"exp": "the  red box ", "obj_id": "1"},
                                 "1": {"exp": "green box", "obj_id": "2"}}, "frames": TRAIN["vidA"]["frames"]},
        "vidB": {"expressions": {"0": {"exp": "a blue box", "obj_id": "3"}}, "frames": TRAIN["vidB"]["frames"]},
    }}  # fmt: skip
    meta = {"videos": {}}
    for video, info in TRAIN.items():
        for i, frame in enumerate(info["frames"]):
            write_frame(root / "train" / "JPEGImages" / video / f"{frame}.jpg", i)
            present = [o for o, on in info["objects"].items() if i in on]
            write_labels(root / "train" / "Annotations" / video / f"{frame}.png", labels_of(i, present))
        meta["videos"][video] = {"objects": {str(o): {"category": "box", "frames": [info["frames"][i] for i in on]}
                                             for o, on in info["objects"].items()}}  # fmt: skip
    (root / "meta_expressions" / "train").mkdir(parents=True)
    (root / "meta_expressions" / "train" / "meta_expressions.json").write_text(json.dumps(meta_exp))
    if with_meta:
        (root / "train" / "meta.json").write_text(json.dumps(meta))
    # valid: v1 and v2 without obj_id (as released); the test json lists v2, so valid keeps v1 only
    valid = {"videos": {v: {"expressions": {"0": {"exp": f"thing in {v}"}}, "frames": ["00000", "00005", "00010"]}
                        for v in ("v1", "v2")}}  # fmt: skip
    for v in ("v1", "v2"):
        for i, frame in enumerate(valid["videos"][v]["frames"]):
            write_frame(root / "valid" / "JPEGImages" / v / f"{frame}.jpg", i)
    for split, content in (("valid", valid), ("test", {"videos": {"v2": valid["videos"]["v2"]}})):
        (root / "meta_expressions" / split).mkdir(parents=True)
        (root / "meta_expressions" / split / "meta_expressions.json").write_text(json.dumps(content))
    return root


@pytest.fixture(scope="module")
def ytvos(tmp_path_factory):
    return write_ytvos(tmp_path_factory.mktemp("ytvos"))


@pytest.fixture
def fresh(tmp_path):
    """A copy a test may damage."""
    return write_ytvos(tmp_path / "ytvos")


def edit_json(path, edit):
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content))


# ---------------------------------------------------------------------------------------------------- reader
def test_reader_train_expressions_and_masks(ytvos):
    reader = RefYTVOS(ytvos, "train")
    assert [(e.video, e.exp_id, e.obj_id) for e in reader.expressions] == [("vidA", "0", 1), ("vidA", "1", 2),
                                                                          ("vidB", "0", 3)]  # fmt: skip
    assert reader.expressions[0].text == "the red box"  # whitespace normalised
    assert reader.expressions[0].frames == TRAIN["vidA"]["frames"]
    assert reader.has_annotations and reader.categories[("vidA", 2)] == "box"
    assert reader.frame_path("vidA", "00005") == ytvos / "train" / "JPEGImages" / "vidA" / "00005.jpg"
    for i, frame in enumerate(TRAIN["vidA"]["frames"]):
        labels = labels_of(i, [o for o, on in TRAIN["vidA"]["objects"].items() if i in on])
        for obj in (1, 2, 3):
            mask = reader.load_mask("vidA", frame, obj)
            assert mask.dtype == bool and mask.shape == (H, W)
            np.testing.assert_array_equal(mask, labels == obj)
    assert reader.target_frames(reader.expressions[1]) == ["00010", "00015"]


def test_target_frames_without_meta_json_scan_the_pngs(tmp_path):
    reader = RefYTVOS(write_ytvos(tmp_path / "d", with_meta=False), "train")
    assert reader.target_frames(reader.expressions[1]) == ["00010", "00015"]
    assert reader.target_frames(reader.expressions[0]) == TRAIN["vidA"]["frames"]


def test_valid_drops_test_videos_and_test_reads_valid_frames(ytvos):
    valid = RefYTVOS(ytvos, "valid")
    assert [e.video for e in valid.expressions] == ["v1"] and valid.excluded_test_videos == ["v2"]
    assert valid.expressions[0].obj_id is None and not valid.has_annotations
    assert valid.load_mask("v1", "00005", None).shape == (H, W) and not valid.load_mask("v1", "00005", 1).any()
    test = RefYTVOS(ytvos, "test")
    assert [e.video for e in test.expressions] == ["v2"]
    assert test.frame_path("v2", "00000").is_file()


def test_unannotated_frame_gives_empty_mask(fresh):
    (fresh / "train" / "Annotations" / "vidA" / "00005.png").unlink()
    reader = RefYTVOS(fresh, "train")
    assert reader.annotation_path("vidA", "00005") is None
    assert not reader.load_mask("vidA", "00005", 1).any()
    assert "00005" not in reader.target_frames(reader.expressions[0])  # meta.json lists it, but it has no PNG


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.pop("videos"), "field 'videos'"),
    (lambda c: c["videos"]["vidA"].update(frames="00000"), "field 'frames'"),
    (lambda c: c["videos"]["vidA"].update(frames=[]), "field 'frames'"),
    (lambda c: c["videos"]["vidA"]["expressions"]["0"].update(exp="  "), "field 'exp'"),
    (lambda c: c["videos"]["vidA"].update(expressions={}), "'expressions' is empty"),
    (lambda c: c["videos"]["vidA"]["expressions"]["0"].update(obj_id="zero"), "field 'obj_id'"),
    (lambda c: c["videos"]["vidA"]["expressions"]["0"].update(obj_id="7"), "obj_id 7, which is not an object"),
])  # fmt: skip
def test_malformed_meta_expressions(fresh, edit, message):
    path = fresh / "meta_expressions" / "train" / "meta_expressions.json"
    edit_json(path, edit)
    with pytest.raises(ValueError, match=message) as info:
        RefYTVOS(fresh, "train")
    assert "meta_expressions.json" in str(info.value)


def test_file_errors_name_the_file(fresh):
    path = fresh / "meta_expressions" / "train" / "meta_expressions.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        RefYTVOS(fresh, "train")
    with pytest.raises(FileNotFoundError, match="meta_expressions.json"):
        RefYTVOS(fresh / "nowhere", "train")
    with pytest.raises(ValueError, match="split"):
        RefYTVOS(fresh, "val")


def test_missing_video_folder(fresh):
    import shutil

    shutil.rmtree(fresh / "train" / "JPEGImages" / "vidB")
    with pytest.raises(FileNotFoundError, match="vidB"):
        RefYTVOS(fresh, "train")


def test_bad_masks(fresh):
    reader = RefYTVOS(fresh, "train")
    rgb = fresh / "train" / "Annotations" / "vidA" / "00000.png"
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(rgb)
    with pytest.raises(ImageError, match=r"00000\.png.*palette"):
        reader.load_mask("vidA", "00000", 1)
    write_labels(fresh / "train" / "Annotations" / "vidA" / "00005.png", np.zeros((W, H)))  # transposed
    with pytest.raises(ValueError, match=r"00005\.png is 24x32 \(W x H\) but its frame .*00005\.jpg is 32x24"):
        reader.load_mask("vidA", "00005", 1)


# ---------------------------------------------------------------------------------------------------- clips
def frame_ids(item):
    """Which fixture frame each clip frame is, from its grey level."""
    return [int(round((float(f.mean()) * 255 - 20) / 30)) for f in item["frames"]]


def test_train_clips(ytvos):
    reader = RefYTVOS(ytvos, "train")
    clips = ReferringClips(reader, num_frames=3, input_size=16, mode="train", seed=5, frame_stride=2)
    assert len(clips) == 3
    resize = ResizeSquare(16)
    seen = set()
    for epoch in range(6):
        clips.set_epoch(epoch)
        for index in range(len(clips)):
            item = clips[index]
            exp = reader.expressions[index]
            assert item["frames"].shape == (3, 3, 16, 16) and item["frames"].dtype == torch.float32
            assert item["masks"].shape == (3, 16, 16) and item["valid"].tolist() == [True] * 3
            assert (item["text"], item["video"], item["exp_id"]) == (exp.text, exp.video, exp.exp_id)
            assert item["orig_size"] == (H, W) and item["transform"]["kind"] == "resize_square"
            ids = frame_ids(item)
            assert [exp.frames[i] for i in ids] == item["frame_names"]
            assert ids == sorted(ids)
            assert set(item["frame_names"]) & set(reader.target_frames(exp))  # the target is in the clip
            for k, name in enumerate(item["frame_names"]):
                expected = resize(Image.new("RGB", (W, H)), reader.load_mask(exp.video, name, exp.obj_id))[1]
                assert torch.equal(item["masks"][k], expected)
                # every object of the frame, renumbered: 1 = the referred one, then the others in id order
                labels = reader.label_map(exp.video, name)
                others = sorted(set(np.unique(labels).tolist()) - {0, exp.obj_id})
                remap = np.zeros(256, np.int64)
                remap[exp.obj_id] = 1
                remap[others] = np.arange(2, 2 + len(others))
                assert torch.equal(item["objects"][k], torch.from_numpy(remap[resize.labels(labels).numpy()]))
            assert torch.equal(item["objects"] == 1, item["masks"].bool())
            # the video's other expressions whose object is in the clip, numbered as in `objects`
            if index == 0:
                in_clip = bool((item["objects"] == 2).any())  # object 2 is on frames 2 and 3 only
                assert item["selection_texts"] == (["green box"] if in_clip else [])
                assert item["selection_objects"].tolist() == ([2] if in_clip else [])
            if index == 1:
                assert item["selection_texts"] == ["the red box"] and item["selection_objects"].tolist() == [2]
            if index == 2:
                assert item["selection_texts"] == [] and item["selection_objects"].shape == (0,)
            if index == 1:
                assert (item["objects"] == 2).any()  # object 1, on every frame, is the clip's other object
                assert item["masks"].sum() > 0  # object 2 is only on frames 2, 3: the draw must include one
                seen.add(tuple(ids))
            if index == 2:  # 2 frames for T = 3: repeated, in order
                assert item["frame_names"] == ["00000", "00000", "00005"] == [exp.frames[i] for i in
                                                                               repeat_indices(2, 3)]  # fmt: skip
    assert len(seen) > 1  # the draws change with the epoch
    clips.set_epoch(3)
    a, b = clips[1], clips[1]
    again = ReferringClips(reader, num_frames=3, input_size=16, mode="train", seed=5, frame_stride=2)
    again.set_epoch(3)
    assert a["frame_names"] == b["frame_names"] == again[1]["frame_names"]
    assert torch.equal(a["frames"], again[1]["frames"])


def test_clips_collate(ytvos):
    clips = ReferringClips(RefYTVOS(ytvos, "train"), num_frames=2, input_size=8)
    batch = make_collate()([clips[0], clips[1]])
    assert batch["frames"].shape == (2, 2, 3, 8, 8) and batch["masks"].shape == (2, 2, 8, 8)
    assert batch["valid"].shape == (2, 2) and batch["text"] == ["the red box", "green box"]
    assert "selection_texts" in batch and "selection_tokens" not in batch  # without a tokenizer: left as lists


def test_collate_pads_the_selection_sentences():
    def tokenize(texts):  # one token per word, 1 = a word
        n = max(len(t.split()) for t in texts)
        mask = torch.tensor([[i < len(t.split()) for i in range(n)] for t in texts])
        return {"tokens": mask.long(), "token_mask": mask}

    samples = [{"text": "a", "selection_texts": ["b c", "d"], "selection_objects": torch.tensor([2, 1])},
               {"text": "e", "selection_texts": [], "selection_objects": torch.zeros(0, dtype=torch.long)},
               {"text": "f", "selection_texts": ["g h i"], "selection_objects": torch.tensor([3])}]
    batch = make_collate(tokenize)(samples)
    assert "selection_texts" not in batch
    assert batch["selection_objects"].tolist() == [[2, 1], [0, 0], [3, 0]]  # 0 = padding
    assert batch["selection_token_mask"].sum(-1).tolist() == [[2, 1], [0, 0], [3, 0]]
    assert batch["selection_tokens"].shape == (3, 2, 3)
    none = make_collate(tokenize)([samples[1]])
    assert none["selection_objects"].tolist() == [[0]] and none["selection_tokens"].shape[:2] == (1, 1)
    with pytest.raises(ValueError, match="sample 0: 2 selection_texts but 1 selection_objects"):
        make_collate(tokenize)([{**samples[0], "selection_objects": torch.tensor([1])}])


def test_frames_mode_centres_each_annotated_frame(ytvos):
    reader = RefYTVOS(ytvos, "train")
    clips = ReferringClips(reader, num_frames=4, input_size=8, mode="frames")
    assert len(clips) == 6 + 2 + 2
    item = clips[6]  # expression "1" (object 2), target frame 00010 = index 2
    assert item["target_frame"] == "00010" and item["target_index"] == 2
    assert item["frame_names"] == ["00000", "00005", "00010", "00015"]
    first = clips[0]  # target index 0: the indices before the video are the first frame
    assert first["frame_names"] == ["00000", "00000", "00000", "00005"] and first["target_index"] == 0


def test_eval_mode_lists_the_whole_video(ytvos):
    clips = ReferringClips(RefYTVOS(ytvos, "valid"), num_frames=4, input_size=8, mode="eval")
    item = clips[0]
    assert set(item) == {"video", "exp_id", "text", "frame_paths", "frame_names", "obj_id"}
    assert item["frame_names"] == ["00000", "00005", "00010"] and item["obj_id"] is None
    assert all(p.is_file() for p in item["frame_paths"])
    with pytest.raises(ValueError, match="no annotations"):
        ReferringClips(RefYTVOS(ytvos, "valid"), num_frames=4, input_size=8, mode="train")


def test_clip_errors(fresh):
    reader = RefYTVOS(fresh, "train")
    with pytest.raises(ValueError, match="mode"):
        ReferringClips(reader, 2, 8, mode="test")
    with pytest.raises(ValueError, match="num_frames"):
        ReferringClips(reader, 0, 8)
    (fresh / "train" / "JPEGImages" / "vidB" / "00005.jpg").unlink()
    clips = ReferringClips(RefYTVOS(fresh, "train"), 2, 8, mode="eval")
    assert not clips[2]["frame_paths"][1].exists()
    write_frame(fresh / "train" / "JPEGImages" / "vidB" / "00005.jpg", 1, size=(H, W + 2))
    write_labels(fresh / "train" / "Annotations" / "vidB" / "00005.png", np.zeros((H, W + 2)))
    with pytest.raises(ValueError, match="frames differ in size"):
        ReferringClips(RefYTVOS(fresh, "train"), 2, 8, mode="frames")[9]
    for frame in ("00010", "00015"):  # object 2 is now on no annotated frame
        (fresh / "train" / "Annotations" / "vidA" / f"{frame}.png").unlink()
    with pytest.raises(ValueError, match=r"vidA/1 \(obj_id 2\)"):
        ReferringClips(RefYTVOS(fresh, "train"), 2, 8)


# ---------------------------------------------------------------------------------------------------- windows
def test_sliding_windows_by_hand():
    windows = sliding_windows(10, 4, 2)
    assert windows == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9]]
    assert assign_frames(windows, 10) == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2), (3, 1),
                                          (3, 2), (3, 3)]  # fmt: skip
    assert sliding_windows(7, 4, 4) == [[0, 1, 2, 3], [3, 4, 5, 6]]  # the last window ends on the last frame
    assert sliding_windows(3, 5, 1) == [[0, 0, 1, 1, 2]]
    assert assign_frames([[0, 0, 1, 1, 2]], 3) == [(0, 1), (0, 2), (0, 4)]
    with pytest.raises(ValueError, match="stride"):
        sliding_windows(10, 4, 5)


@pytest.mark.parametrize("total, length, stride", [(1, 1, 1), (5, 5, 3), (23, 6, 4), (100, 8, 8), (9, 8, 1)])
def test_sliding_windows_cover_every_frame(total, length, stride):
    windows = sliding_windows(total, length, stride)
    assert all(len(w) == length and w == sorted(w) for w in windows)
    assert set().union(*windows) == set(range(total))
    for frame, (w, pos) in enumerate(assign_frames(windows, total)):
        assert windows[w][pos] == frame


def test_train_clip_indices_properties():
    from vlalign.data.clips import train_clip_indices

    rng = np.random.default_rng(0)
    for _ in range(300):
        total, length, stride = int(rng.integers(1, 40)), int(rng.integers(1, 9)), int(rng.integers(1, 6))
        target = int(rng.integers(total))
        indices = train_clip_indices(total, length, target, stride, rng)
        assert len(indices) == length and target in indices and indices == sorted(indices)
        assert 0 <= indices[0] and indices[-1] < total
        if total >= length:
            assert len(set(indices)) == length  # no repeats while the video is long enough
            gaps = np.diff(indices)
            assert gaps.max(initial=1) <= 2 * stride  # the replaced grid point moves by at most stride / 2
