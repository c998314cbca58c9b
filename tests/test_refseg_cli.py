"""Referring segmentation end to end: `vlalign train | eval | predict | demo`, the predictor on a real photo,
and model folders (save / load / wrong architecture). Tiny models on a tiny synthetic benchmark."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vlalign import assets
from vlalign.cli import main
from vlalign.models.loading import CheckpointMismatch
from vlalign.models.pretrained import build_model, from_pretrained, save_pretrained
from vlalign.predictor import ReferringSegmenter
from vlalign.synth.refcoco import generate_refcoco

transformers = pytest.importorskip("transformers")

TINY = {"input_size": 64, "pixel_dim": 32, "pixel_layers": 1, "pixel_heads": 4, "pixel_ffn_dim": 32,
        "word_ffn_dim": 32, "query_dim": 32, "query_layers": 1, "query_heads": 4, "query_ffn_dim": 32,
        "mask_dim": 16, "pretrained_backbone": False, "pretrained_text": False}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth")
    generate_refcoco(path, num_images=16, seed=3)
    return path


def tiny_model(bert_dir, name="alignformer_lite", **extra):
    torch.manual_seed(0)
    return build_model(name, text_dir=bert_dir, **TINY, **extra)


def tiny_set_args(bert_dir) -> list[str]:
    return ["--set", *(f"{k}={json.dumps(v)}" for k, v in TINY.items()), f"text_dir={bert_dir}"]


def test_train_eval_predict_through_the_cli(bert_dir, data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "alignformer_lite", "--data", str(data_dir), "--out", str(run), "--batch-size", "2",
            "--save-every", "1", "--hflip", "0.5", *tiny_set_args(bert_dir)]
    assert main(args + ["--iters", "2"]) == 0
    results = json.loads((run / "results.json").read_text())["results"]
    assert set(results) == {"val", "testA", "testB"}
    assert all(0 <= r["mIoU"] <= 1 and r["resolution"] == "original" for r in results.values())
    assert (run / "model" / "config.json").is_file() and (run / "model" / "model.safetensors").is_file()
    assert "mirrored with probability 0.5" in (run / "model" / "README.md").read_text()  # the card says so

    # resume continues from iteration 2 to 3 instead of starting again
    assert main(args + ["--iters", "3", "--resume"]) == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r.get("iteration", 0) for r in lines) == 3

    out_json = tmp_path / "eval.json"
    assert main(["eval", "--weights", str(run / "model"), "--data", str(data_dir), "--split", "val",
                 "--json", str(out_json)]) == 0
    evaluated = json.loads(out_json.read_text())["val"]
    assert evaluated["num_samples"] == results["val"]["num_samples"]
    # synthetic data: per-form breakdown from synth_info.json, every sentence in exactly one form
    assert sum(g["count"] for g in evaluated["breakdown"].values()) == evaluated["num_samples"]
    assert all(name.startswith("form:") for name in evaluated["breakdown"])
    assert "form:" in capsys.readouterr().out

    image_path = next((data_dir / "images").iterdir())
    out = tmp_path / "pred" / "mask.png"
    assert main(["predict", "--weights", str(run / "model"), str(image_path), "the red circle", "--out",
                 str(out)]) == 0
    mask, image = Image.open(out), Image.open(image_path)
    assert mask.size == image.size and set(np.unique(np.asarray(mask))) <= {0, 255}
    assert (tmp_path / "pred" / "mask_overlay.png").is_file()


def test_cli_errors_name_the_problem(bert_dir, data_dir, tmp_path, capsys):
    assert main(["eval", "--weights", str(tmp_path / "nowhere"), "--data", str(data_dir)]) == 2
    assert "no such model folder" in capsys.readouterr().err
    assert main(["train", "alignformer_nope", "--data", str(data_dir), "--out", str(tmp_path / "r")]) == 2
    assert "unknown model 'alignformer_nope'" in capsys.readouterr().err
    assert main(["train", "alignformer_lite", "--data", str(data_dir), "--out", str(tmp_path / "r"),
                 "--set", "oops"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["train", "alignformer_lite", "--data", str(data_dir), "--out", str(tmp_path / "r"),
                 "--hflip", "1.5", *tiny_set_args(bert_dir)]) == 2
    assert "flip probability must be in [0, 1], got 1.5" in capsys.readouterr().err


def test_predictor_on_a_real_photo(bert_dir):
    try:
        path = assets.skimage_image("astronaut.png")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    model = tiny_model(bert_dir)
    seg = ReferringSegmenter(model)
    with pytest.raises(RuntimeError, match="set_image"):
        seg.predict("the man")
    photo = Image.open(path)
    seg.set_image(photo)
    masks = seg.predict(["the man on the left", "the red circle"], return_probs=True)
    assert len(masks) == 2 and all(m.shape == (photo.height, photo.width) for m in masks)
    single = seg.predict("the man on the left")
    assert single.dtype == bool and single.shape == (512, 512)
    # the other expressions of a batch (and their padding) do not leak into an expression's mask, and a batch
    # of one matches: up to float rounding, which this tiny random model amplifies (1e-6 feature noise gives
    # ~2e-4 on the probabilities; another sentence moves them by > 1e-2)
    assert np.abs(masks[1] - masks[0]).max() > 1e-2
    other = seg.predict(["the man on the left", "the big green square from the right"], return_probs=True)
    np.testing.assert_allclose(other[0], masks[0], atol=2e-3)
    np.testing.assert_allclose(seg.predict("the man on the left", return_probs=True), masks[0], atol=2e-3)
    with pytest.raises(ValueError):
        seg.predict("   ")
    seg.set_image(np.asarray(photo.convert("L")))  # grey arrays are accepted too
    assert seg.predict("the man").shape == (512, 512)


def test_predictor_reports_a_corrupt_image(bert_dir, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    seg = ReferringSegmenter(tiny_model(bert_dir))
    with pytest.raises(ValueError, match="broken.jpg"):
        seg.set_image(bad)


def test_model_folder_of_another_architecture_is_refused(bert_dir, tmp_path):
    folder = save_pretrained(tiny_model(bert_dir), tmp_path / "lite")
    swin = tiny_model(bert_dir, "alignformer_swin_t", backbone="swin",
                      backbone_kwargs={"embed_dim": 32, "depths": [1, 1, 1, 1], "num_heads": [1, 2, 4, 8],
                                       "window_size": 4})
    save_pretrained(swin, tmp_path / "swin")
    (folder / "model.safetensors").write_bytes((tmp_path / "swin" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointMismatch, match="model.safetensors"):
        from_pretrained(folder)


def test_demo_runs_end_to_end_small(tmp_path, capsys):
    try:
        assets.minilm_dir(), assets.efficientnet_lite0_weights()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--num-images", "12", "--iters", "2", "--batch-size", "2"]) == 0
    printed = capsys.readouterr().out
    assert "testA" in printed and "overlays" in printed
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"val", "testA", "testB"}
    assert len(list((out / "overlays").glob("*.png"))) > 0


def test_shuffled_expressions_keep_targets_and_permute_sentences(data_dir):
    from vlalign.data.refer import ReferDataset
    from vlalign.refseg import ShuffledText

    base = ReferDataset(data_dir, "train", mode="train", seed=1)
    shuffled = ShuffledText(base, seed=1)
    for epoch in (0, 1):
        shuffled.set_epoch(epoch)
        texts = [base.text(i) for i in range(len(base))]
        items = [shuffled[i] for i in range(len(base))]
        assert all(torch.equal(item["mask"], base[i]["mask"]) for i, item in enumerate(items))
        assert sorted(item["text"] for item in items) == sorted(texts)
        assert sum(item["text"] != base[i]["text"] for i, item in enumerate(items)) > len(base) // 2
