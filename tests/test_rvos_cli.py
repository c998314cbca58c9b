"""Referring video segmentation end to end through the CLI, on a tiny synthetic Ref-YouTube-VOS set:
`vlalign rvos train` (with resume), `vlalign rvos eval` (submission layout + the offline scorer), and
`vlalign predict-video` writing a readable .mp4."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vlalign.cli import main
from vlalign.data.ytvos import RefYTVOS
from vlalign.synth.ytvos import generate_ytvos

transformers = pytest.importorskip("transformers")
cv2 = pytest.importorskip("cv2")
pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"input_size": 32, "num_frames": 3, "decoder_dim": 16, "lmdf_groups": 4, "pretrained_backbone": False,
        "pretrained_text": False, "backbone": "resnet",
        "backbone_kwargs": {"depths": [1, 1, 1, 1], "planes": [4, 8, 16, 32], "stem_channels": 8}}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("ytvos")
    generate_ytvos(path, num_videos=4, seed=1, width=64, height=64, frames=(4, 6))
    return path


def set_args(bert_dir) -> list[str]:
    return ["--set", *(f"{k}={json.dumps(v)}" for k, v in TINY.items()), f"text_dir={bert_dir}"]


def test_train_eval_and_predict_video_through_the_cli(bert_dir, data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["rvos", "train", "twostream_r101", "--data", str(data_dir), "--out", str(run), "--batch-size", "2",
            "--save-every", "1", *set_args(bert_dir)]
    assert main(args + ["--iters", "2"]) == 0
    valid = json.loads((run / "results.json").read_text())["results"]["valid"]
    assert 0 <= valid["J&F-Mean"] <= 1 and valid["num_expressions"] == len(RefYTVOS(data_dir, "valid"))
    assert set(valid["breakdown"]) >= {"motion_only"}  # synth_info.json groups
    assert main(args + ["--iters", "3", "--resume"]) == 0  # continues at iteration 2
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r.get("iteration", 0) for r in lines) == 3
    in_memory = json.loads((run / "results.json").read_text())["results"]["valid"]
    card = json.loads((run / "model" / "config.json").read_text())["card"]  # the model card: data, scores
    assert card["training"]["iterations"] == 3 and "clips of" in card["data"]
    assert card["metrics"]["valid"]["J&F-Mean"] == in_memory["J&F-Mean"]
    assert "Not recorded" not in (run / "model" / "README.md").read_text()

    # eval: the submission layout, scored by the offline scorer -- the same numbers as the in-memory J&F
    pred, out_json = tmp_path / "pred", tmp_path / "eval.json"
    assert main(["rvos", "eval", "--weights", str(run / "model"), "--data", str(data_dir), "--pred", str(pred),
                 "--json", str(out_json)]) == 0
    scored = json.loads(out_json.read_text())
    assert scored["J&F-Mean"] == pytest.approx(in_memory["J&F-Mean"], abs=1e-12)
    assert scored["per_expression"] == pytest.approx(in_memory["per_expression"], abs=1e-12)
    exp = RefYTVOS(data_dir, "valid").expressions[0]
    png = pred / "Annotations" / exp.video / exp.exp_id / f"{exp.frames[-1]}.png"
    assert set(np.unique(np.asarray(Image.open(png)))) <= {0, 255}
    assert "J&F-Mean" in capsys.readouterr().out

    # the test split has no ground truth: predictions only
    assert main(["rvos", "eval", "--weights", str(run / "model"), "--data", str(data_dir), "--split", "test",
                 "--pred", str(tmp_path / "test_pred")]) == 0
    assert "submit" in capsys.readouterr().out

    # predict-video on an .mp4 of 11 frames: an overlay video with as many frames, and the masks
    source, out = tmp_path / "in.mp4", tmp_path / "out" / "overlay.mp4"
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*"mp4v"), 10, (48, 40))
    for i in range(11):
        frame = np.zeros((40, 48, 3), np.uint8)
        frame[10:25, 2 + 3 * i : 14 + 3 * i] = (0, 200, 0)
        writer.write(frame)
    writer.release()
    assert main(["predict-video", str(source), "the green square", "a circle", "--weights", str(run / "model"),
                 "--out", str(out), "--masks", str(tmp_path / "masks")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 11
    capture = cv2.VideoCapture(str(out))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 11
    ok, frame = capture.read()
    assert ok and frame.shape == (40, 48, 3)
    capture.release()
    assert len(list((tmp_path / "masks" / "1").glob("*.png"))) == 11

    assert main(["predict-video", str(tmp_path / "missing.mp4"), "x", "--weights", str(run / "model"),
                 "--out", str(out)]) == 2


def test_predict_video_names_a_missing_or_unreadable_video(tmp_path):
    from vlalign.video_predictor import predict_video

    with pytest.raises(FileNotFoundError, match="video not found"):
        predict_video(tmp_path / "none.mp4", ["the square"], tmp_path / "out.mp4", segmenter=None)
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    with pytest.raises(ValueError, match=r"bad\.mp4: OpenCV cannot open this video"):
        predict_video(bad, ["the square"], tmp_path / "out.mp4", segmenter=None)


def test_predict_video_max_frames_writes_a_readable_mp4(bert_dir, tmp_path, capsys):
    """An untrained tiny model saved with save_pretrained: --max-frames 4 of a 9-frame video -> 4 overlay frames."""
    import torch

    from vlalign.models.pretrained import build_model, save_pretrained

    torch.manual_seed(0)
    weights = save_pretrained(build_model("twostream_r101", **TINY, text_dir=bert_dir), tmp_path / "model")
    source, out = tmp_path / "in.avi", tmp_path / "overlay.mp4"
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*"MJPG"), 10, (36, 28))
    for i in range(9):
        writer.write(np.full((28, 36, 3), 20 * i, np.uint8))
    writer.release()
    assert main(["predict-video", str(source), "the square", "--weights", str(weights), "--out", str(out),
                 "--max-frames", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 4
    capture = cv2.VideoCapture(str(out))
    frames = []
    while (read := capture.read())[0]:
        frames.append(read[1])
    capture.release()
    assert len(frames) == 4 and frames[0].shape == (28, 36, 3)
    # the whole video when --max-frames is not given
    assert main(["predict-video", str(source), "the square", "--weights", str(weights), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 9


def test_query_decoder_trains_and_scores_through_the_cli(bert_dir, data_dir, tmp_path):
    """`--set query_decoder=true`: the clips' object ids reach the model's matching; the saved model reloads
    with its query decoder and `rvos eval` scores it as the training run did."""
    run = tmp_path / "run"
    assert main(["rvos", "train", "twostream_r101", "--data", str(data_dir), "--out", str(run), "--batch-size",
                 "2", "--iters", "2", *set_args(bert_dir), "query_decoder=true", "num_queries=3"]) == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("loss_instance", 0) > 0 for r in lines)  # the synthetic clips hold several objects
    in_memory = json.loads((run / "results.json").read_text())["results"]["valid"]
    out_json = tmp_path / "eval.json"
    assert main(["rvos", "eval", "--weights", str(run / "model"), "--data", str(data_dir), "--pred",
                 str(tmp_path / "pred"), "--json", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["J&F-Mean"] == pytest.approx(in_memory["J&F-Mean"], abs=1e-12)
