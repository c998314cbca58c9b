"""Safe reading (safetensors, weights_only torch files, wrappers) and strict loading with named exceptions."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from vlalign.models.loading import (
    CheckpointMismatch,
    NotACheckpoint,
    load_strict,
    read_state_dict,
    unwrap_state_dict,
)


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


def test_safetensors_by_extension_and_by_magic(tmp_path):
    sd = small_net().state_dict()
    save_file(sd, tmp_path / "w.safetensors")
    # Same bytes under a name that says nothing: recognised by the header, not passed to torch.load.
    (tmp_path / "w.bin").write_bytes((tmp_path / "w.safetensors").read_bytes())
    for name in ("w.safetensors", "w.bin"):
        got = read_state_dict(tmp_path / name)
        assert got.keys() == sd.keys()
        assert all(torch.equal(got[k], sd[k]) for k in sd)


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"model": sd, "epoch": 3},
    lambda sd: {"state_dict": sd, "optimizer": {"lr": 0.1}},
    lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
])
def test_torch_files_are_unwrapped(tmp_path, wrap):
    sd = small_net().state_dict()
    torch.save(wrap(sd), tmp_path / "ckpt.pth")
    got = read_state_dict(tmp_path / "ckpt.pth")
    assert list(got) == list(sd)
    assert torch.equal(got["3.weight"], sd["3.weight"])


def test_pickled_module_is_refused_not_unpickled(tmp_path):
    torch.save(small_net(), tmp_path / "whole_model.pt")  # needs arbitrary unpickling: never allowed
    with pytest.raises(NotACheckpoint, match=r"whole_model\.pt.*weights_only=True.*state_dict"):
        read_state_dict(tmp_path / "whole_model.pt")


@pytest.mark.parametrize("content", [b"just some text, not a checkpoint\n", b"", b"\x00" * 64])
def test_garbage_file_names_the_file(tmp_path, content):
    (tmp_path / "notes.pth").write_bytes(content)
    with pytest.raises(NotACheckpoint, match="notes.pth"):
        read_state_dict(tmp_path / "notes.pth")


def test_missing_file_and_mapping_without_tensors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        read_state_dict(tmp_path / "nope.pth")
    with pytest.raises(NotACheckpoint, match="no state dict found"):
        unwrap_state_dict({"epoch": 1, "lr": 0.1}, source="x.pth")


def test_load_strict_copies_everything():
    src, dst = small_net(0), small_net(1)
    assert not torch.equal(dst[0].weight, src[0].weight)
    report = load_strict(dst, src.state_dict(), source="a.pth")
    assert report.loaded == len(src.state_dict()) and not report.tolerated_missing
    assert torch.equal(dst[0].weight, src[0].weight)


def test_tolerated_keys_need_a_full_match_and_carry_their_reason():
    sd = dict(small_net().state_dict())
    extra = {"head.weight": torch.zeros(3), "head_extra.bias": torch.zeros(1)}
    dst = small_net()
    with pytest.raises(CheckpointMismatch, match=r"unexpected in the checkpoint \(1\): head_extra\.bias"):
        load_strict(dst, {**sd, **extra}, tolerated={r"head\.weight": "classifier"}, source="a.pth")
    del sd["1.running_mean"]
    report = load_strict(dst, {**sd, "head.weight": torch.zeros(3)},
                         tolerated={r"head\..*": "classifier", r"1\.running_.*": "re-estimated"})
    assert report.tolerated_unexpected == {"head.weight": "classifier"}
    assert report.tolerated_missing == {"1.running_mean": "re-estimated"}
    assert "re-estimated" in str(report)


def test_shape_mismatch_is_never_tolerated():
    sd = dict(small_net().state_dict())
    sd["3.weight"] = torch.zeros(2, 5)
    with pytest.raises(CheckpointMismatch, match=r"shape mismatch \(1\): 3\.weight \(checkpoint \(2, 5\)"):
        load_strict(small_net(), sd, tolerated={r".*": "anything"}, source="b.pth")


def test_different_architecture_is_called_out_and_lists_are_truncated():
    resnet_like = {f"layer1.{i}.conv1.weight": torch.zeros(1) for i in range(20)}
    with pytest.raises(CheckpointMismatch) as err:
        load_strict(small_net(), resnet_like, source="resnet50.pth")
    msg = str(err.value)
    assert "resnet50.pth" in msg and "different architecture" in msg
    assert "unexpected in the checkpoint (20)" in msg and "and 12 more" in msg


def test_partial_mismatch_is_not_called_a_different_architecture():
    sd = dict(small_net().state_dict())
    del sd["3.bias"]
    with pytest.raises(CheckpointMismatch, match="missing from the checkpoint") as err:
        load_strict(small_net(), sd)
    assert "different architecture" not in str(err.value)
