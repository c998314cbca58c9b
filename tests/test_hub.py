"""Model cards and Hub conventions: the card written with every model folder, metrics added later, Hub ids
resolved through huggingface_hub (mocked: the Hub cannot be reached here; the offline miss is real), and
push_to_hub against a recording stand-in for HfApi."""

from __future__ import annotations

import json

import pytest
import torch

from vlalign import hub
from vlalign.models.pretrained import build_model, from_pretrained, save_pretrained

TINY = {"backbone": "swin", "backbone_kwargs": {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2],
                                               "window_size": 4, "drop_path_rate": 0.0},
        "input_size": 64, "pixel_dim": 16, "pixel_layers": 1, "pixel_heads": 2, "pixel_ffn_dim": 16,
        "word_ffn_dim": 16, "query_dim": 16, "query_layers": 1, "query_heads": 2, "query_ffn_dim": 16,
        "mask_dim": 8, "pretrained_backbone": False, "pretrained_text": False}


@pytest.fixture(scope="module")
def model_dir(bert_dir, tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("alignformer_swin_t", text_dir=bert_dir, **TINY)
    model.card_info = {"dataset": "refcoco-synth", "data": "Synthetic refer-format data.",
                       "protocol": "mIoU over every sentence at the original resolution."}
    return save_pretrained(model, tmp_path_factory.mktemp("hub") / "model")


def test_save_pretrained_writes_a_model_card(model_dir):
    card = (model_dir / "README.md").read_text()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "library_name: vlalign" in front and "pipeline_tag: image-segmentation" in front
    assert '"alignformer_swin_t"' in front and '"refcoco-synth"' in front
    for section in ("## Model", "## Data", "## Protocol", "## Metrics", "## How to load"):
        assert section in body, section
    assert "Synthetic refer-format data." in body and "original resolution" in body
    meta = json.loads((model_dir / "config.json").read_text())
    assert meta["card"]["parameters"] == sum(p.numel() for p in from_pretrained(model_dir).parameters())


def test_update_model_card_adds_metrics_and_keeps_the_rest(model_dir, tmp_path):
    import shutil

    folder = shutil.copytree(model_dir, tmp_path / "m")
    metrics = {"val": {"mIoU": 0.41234, "oIoU": 0.5, "prec@0.5": 0.25, "num_samples": 120, "resolution": "original"}}
    hub.update_model_card(folder, metrics=metrics)
    card = (folder / "README.md").read_text()
    assert "| split | mIoU | oIoU | prec@0.5 | num_samples |" in card
    assert "| val | 41.23 | 50.00 | 25.00 | 120 |" in card
    assert "Synthetic refer-format data." in card  # earlier card info survives the update
    assert json.loads((folder / "config.json").read_text())["card"]["metrics"] == metrics
    from_pretrained(folder)  # the updated config.json still loads


def test_local_folders_win_and_bad_names_say_so(model_dir, tmp_path):
    assert hub.resolve_model_dir(model_dir) == model_dir
    for bad in (tmp_path / "missing", "a/b/c", "./user/name"):
        with pytest.raises(FileNotFoundError, match="no such model folder"):
            hub.resolve_model_dir(bad)


def test_hub_id_offline_and_not_cached_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as err:
        hub.resolve_model_dir("someone/vlalign-model", cache_dir=tmp_path)  # the real snapshot_download
    message = str(err.value)
    assert "HF_HUB_OFFLINE" in message and "hf download someone/vlalign-model --local-dir DIR" in message


def test_from_pretrained_resolves_a_hub_id_through_snapshot_download(model_dir, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(model_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    model = from_pretrained("someone/vlalign-model@v1.0")
    assert model.config.name == "alignformer_swin_t"
    repo_id, kwargs = calls[0]
    assert repo_id == "someone/vlalign-model" and kwargs["revision"] == "v1.0"
    assert kwargs["local_files_only"] is False and "model.safetensors" in kwargs["allow_patterns"]

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline: the cache only
    hub.resolve_model_dir("someone/vlalign-model")
    assert calls[-1][1]["local_files_only"] is True


class RecordingApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))
        return "https://huggingface.co/someone/vlalign-model/commit/abc"


def test_push_to_hub_uploads_only_the_model_files_with_a_card(model_dir, tmp_path):
    import shutil

    folder = shutil.copytree(model_dir, tmp_path / "m")
    api = RecordingApi()
    url = hub.push_to_hub(folder, "someone/vlalign-model", private=True, api=api)
    assert url.endswith("/commit/abc")
    (c1, repo1, kw1), (c2, repo2, kw2) = api.calls
    assert (c1, repo1, kw1["private"], kw1["exist_ok"]) == ("create_repo", "someone/vlalign-model", True, True)
    assert c2 == "upload_folder" and kw2["folder_path"] == str(folder) and kw2["allow_patterns"] == hub.MODEL_FILES
    assert 'from_pretrained("someone/vlalign-model")' in (folder / "README.md").read_text()
    with pytest.raises(ValueError, match="user/name"):
        hub.push_to_hub(folder, "not a repo id", api=api)
    with pytest.raises(FileNotFoundError, match="not a vlalign model folder"):
        hub.push_to_hub(tmp_path, "someone/other", api=api)
