"""End to end through the CLI: `vlalign reid train` (three stages, resume), `reid eval`, `reid search`."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from vlalign.cli import main


@pytest.fixture(scope="module")
def sysu(tmp_path_factory):
    root = tmp_path_factory.mktemp("sysu_tiny")
    assert main(["synth", "sysu", "--out", str(root), "--num-ids", "8", "--seed", "1"]) == 0
    return root


def _tiny(bert_dir, *more):
    return ["--set", "pretrained_backbone=false", f"text_dir={bert_dir}", "pretrained_text=false",
            "image_size=[32,16]", "embed_dim=16", "num_instances=2", *more]


def _train(sysu, out, bert_dir, *extra, overrides=()):
    argv = ["reid", "train", "clip4vireid_lite", "--data", str(sysu), "--out", str(out), "--iters", "2", "2", "2",
            "--batch-size", "8", "4", "4", "--save-every", "1", "--trials", "2", *extra,
            *_tiny(bert_dir, *overrides)]
    return main(argv)


@pytest.fixture(scope="module")
def trained(sysu, bert_dir, tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("reid_run") / "run"
    assert _train(sysu, out, bert_dir) == 0
    return out


def test_train_runs_three_stages_and_prints_the_protocol_table(trained, capsys):
    for stage in (1, 2, 3):
        assert (trained / f"stage{stage}" / "checkpoints" / "latest").read_text().strip() == "iter_00000002"
    assert (trained / "model" / "model.safetensors").is_file()
    results = json.loads((trained / "results.json").read_text())["results"]
    (name, metrics), = results.items()
    assert name == "SYSU all-search single-shot, seeded" and metrics["trials"] == 2
    assert 0 < metrics["rank1"] <= metrics["rank5"] <= 1 and 0 < metrics["mAP"] <= 1 and 0 < metrics["mINP"] <= 1
    config = json.loads((trained / "model" / "config.json").read_text())
    assert config["architecture"] == "clip4vireid_lite" and config["config"]["num_ids"] == 6  # train + val ids
    card = config["card"]  # the model card says what it was trained on, how it was scored, and the scores
    assert card["dataset"] == "sysu_tiny0" and "visible and" in card["data"] and "SYSU-MM01" in card["protocol"]
    assert card["training"] == {"TSG": "2 iterations", "IFE": "2 iterations", "HSA": "2 iterations", "seed": 0}
    assert card["metrics"] == results
    readme = (trained / "model" / "README.md").read_text()
    assert "| SYSU all-search single-shot, seeded |" in readme and "Not recorded" not in readme


def test_training_ends_by_fitting_the_test_feature_centre_on_both_modalities(sysu, trained, one_thread):
    import numpy as np

    from vlalign import reid
    from vlalign.models.pretrained import from_pretrained

    model = from_pretrained(trained / "model")
    assert model.config.test_center  # the lite default
    saved = model.feature_center.clone()
    visible, infrared = reid.training_images("sysu", sysu)
    assert len(visible) < 400 and len(infrared) < 400  # so every training image is in the mean
    model.feature_center.zero_()
    expected = (reid.extract_features(model, visible.paths).mean(0)
                + reid.extract_features(model, infrared.paths).mean(0)) / 2
    assert saved.abs().sum() > 0 and np.allclose(saved.numpy(), expected, atol=1e-5)
    summary = json.loads((trained / "results.json").read_text())["train"]
    assert summary["3"]["center_seconds"] > 0  # counted as training time (benchmarks/learning_reid.py)
    no_infrared = reid.ReidImages.from_lists([], [], [])
    with pytest.raises(ValueError, match="got no infrared images"):
        reid.fit_feature_center(model, visible, no_infrared)


def test_killed_run_resumes_at_the_right_stage_exactly(sysu, trained, bert_dir, tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    assert _train(sysu, out, bert_dir, "--stages", "1", "2", "--no-final-eval") == 0  # "killed" after stage 2
    capsys.readouterr()
    assert _train(sysu, out, bert_dir) == 2  # a fresh run refuses a folder that holds stages
    assert "resume" in capsys.readouterr().err
    assert _train(sysu, out, bert_dir, "--resume", "--no-final-eval") == 0
    log = capsys.readouterr().out
    assert "stage 1: complete" in log and "stage 2: complete" in log and "stage 3 (HSA)" in log
    resumed, straight = load_file(str(out / "model" / "model.safetensors")), \
        load_file(str(trained / "model" / "model.safetensors"))
    assert resumed.keys() == straight.keys()
    assert all((resumed[k] == straight[k]).all() for k in straight)  # same weights as the uninterrupted run


def test_weight_average_is_what_a_finished_stage_hands_on_when_resumed(sysu, bert_dir, tmp_path, capsys, one_thread):
    ema = ("stage_ema=[0,0.5,0.5]",)
    assert _train(sysu, tmp_path / "straight", bert_dir, "--no-final-eval", overrides=ema) == 0
    out = tmp_path / "run"
    assert _train(sysu, out, bert_dir, "--stages", "1", "2", "--no-final-eval", overrides=ema) == 0
    capsys.readouterr()
    assert _train(sysu, out, bert_dir, "--resume", "--no-final-eval", overrides=ema) == 0
    log = capsys.readouterr().out
    assert re.search(r"stage 1: complete at \S+, weights loaded", log)  # stage 1 kept no average
    assert re.search(r"stage 2: complete at \S+, averaged weights loaded", log)
    resumed, straight = (load_file(str(d / "model" / "model.safetensors")) for d in (out, tmp_path / "straight"))
    assert all((resumed[k] == straight[k]).all() for k in straight)  # stage 3 started from the average
    state = torch.load(out / "stage2" / "checkpoints" / "iter_00000002" / "train_state.pt", weights_only=True)
    assert state["ema"]["updates"] == 2
    # the checkpoint's own weights are the live ones: stage 3 from them would end elsewhere
    live = load_file(str(out / "stage2" / "checkpoints" / "iter_00000002" / "model.safetensors"))
    name = next(k for k in state["ema"]["shadow"] if k.startswith("image_encoder") and k.endswith("weight"))
    assert not torch.equal(live[name], state["ema"]["shadow"][name])


def test_augmentation_options_reach_the_training_images(sysu, bert_dir, tmp_path, monkeypatch, capsys, one_thread):
    """--set channel_prob=1.0: every visible training image of stage 2 is one channel repeated; remap_knots
    reaches the training set; out-of-range values of both are refused with the field named."""
    import vlalign.reid

    made = []

    class Recording(vlalign.reid.ReidTrainSet):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(vlalign.reid, "ReidTrainSet", Recording)
    assert _train(sysu, tmp_path / "run", bert_dir, "--stages", "1", "2", "--no-final-eval",
                  overrides=["channel_prob=1.0", "remap_knots=3"]) == 0
    (train_set,) = made
    assert train_set.channel_prob == 1.0 and train_set.remap_knots == 3
    train_set.erase_prob = 0.0  # random erasing fills its box with per-channel noise
    visible = [i for i in range(len(train_set)) if train_set[i]["modality"] == 0]
    assert visible and all(torch.equal(train_set[i]["image"][0], train_set[i]["image"][2]) for i in visible[:6])
    assert _train(sysu, tmp_path / "bad", bert_dir, overrides=["channel_prob=2"]) == 2
    assert "channel_prob must be in [0, 1]" in capsys.readouterr().err
    assert _train(sysu, tmp_path / "bad2", bert_dir, overrides=["remap_knots=1"]) == 2
    assert "remap_knots must be >= 2" in capsys.readouterr().err


def test_evaluate_reid_on_chosen_identities(sysu, trained, one_thread):
    """ids= puts training identities in the test roles (every IR image a query); other data sets refuse."""
    from vlalign.data.sysu import read_id_file, sysu_query
    from vlalign.models.pretrained import from_pretrained
    from vlalign.reid import evaluate_reid

    model = from_pretrained(trained / "model")
    ids = read_id_file(sysu / "exp" / "train_id.txt")
    (scores,) = evaluate_reid(model, "sysu", sysu, trials=2, ids=ids).values()
    assert scores["queries"] == len(sysu_query(sysu, ids)) and 0 < scores["rank1"] <= 1
    with pytest.raises(ValueError, match="official"):
        evaluate_reid(model, "sysu", sysu, trials=1, sampling="official", ids=ids)
    with pytest.raises(ValueError, match="fixed test splits"):
        evaluate_reid(model, "regdb", sysu, ids=ids)


def test_eval_prints_rank_map_minp(sysu, trained, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["reid", "eval", "--weights", str(trained / "model"), "--data", str(sysu), "--trials", "3",
                 "--mode", "all", "indoor", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    header = text.splitlines()[0].split()
    assert header[:7] == ["protocol", "R1", "R5", "R10", "R20", "mAP", "mINP"]
    assert "SYSU all-search single-shot, seeded" in text and "SYSU indoor-search single-shot, seeded" in text
    metrics = json.loads(out.read_text())
    assert {m["trials"] for m in metrics.values()} == {3}


def test_search_prints_ranked_list_and_writes_sheet(sysu, trained, tmp_path, capsys):
    from PIL import Image

    query = next((sysu / "cam3").rglob("*.jpg"))
    sheet = tmp_path / "sheet.jpg"
    assert main(["reid", "search", "--weights", str(trained / "model"), "--query", str(query), "--gallery",
                 str(sysu / "cam1"), "--topk", "4", "--sheet", str(sheet)]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in lines] == [1, 2, 3, 4]
    scores = [float(r[1]) for r in lines]
    assert scores == sorted(scores, reverse=True)
    assert all(r[2].startswith(str(sysu / "cam1")) for r in lines)
    with Image.open(sheet) as im:
        assert im.width > 5 * 64 and im.height > 128  # query + 4 tiles of 64x128 with captions


def test_search_names_a_missing_query(trained, tmp_path, capsys):
    assert main(["reid", "search", "--weights", str(trained / "model"), "--query", str(tmp_path / "nope.jpg"),
                 "--gallery", str(tmp_path)]) == 2
    assert "nope.jpg" in capsys.readouterr().err


def test_gallery_without_images_or_missing_is_named(tmp_path):
    from vlalign.reid import gallery_images

    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="holds no image"):
        gallery_images(tmp_path)
    with pytest.raises(FileNotFoundError, match="gallery folder not found"):
        gallery_images(tmp_path / "missing")
