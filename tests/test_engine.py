"""Acceptance tests of the training engine: exact resume after SIGKILL, DDP parity, schedules, checkpoints,
AMP, weight-decay groups, the resumable sampler."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import engine_toy
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from vlalign.engine import (
    ResumableBatchSampler,
    TrainConfig,
    WeightEMA,
    apply_saved_average,
    build_optimizer,
    build_param_groups,
    build_scheduler,
    latest_checkpoint,
    load_checkpoint,
    lr_factor,
    save_checkpoint,
    train,
)
from vlalign.engine import checkpoint as ckpt
from vlalign.engine.logging import MetricLogger

TOY = str(Path(engine_toy.__file__).resolve())
REPO = str(Path(__file__).resolve().parents[1])


def _weights(out_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(latest_checkpoint(out_dir) / ckpt.MODEL_FILE)


def _records(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}


# (a) ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_identical_weights(tmp_path):
    # 40 samples / global batch 8 = 5 iterations per epoch; checkpoints every 3 iterations land mid-epoch.
    # --jitter adds RNG-drawn input noise, so the RNG states must be restored too.
    args = ["--max-iters", "12", "--save-every", "3", "--eval-every", "4", "--num-workers", "1", "--jitter"]
    engine_toy.main(["--out", str(tmp_path / "ref"), *args])

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, TOY, "--out", str(run), *args],
                            env={**_env(), "VLALIGN_TOY_SLEEP": "0.25"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = run / "checkpoints" / "latest"
    deadline = time.monotonic() + 60
    while not (latest.exists() and int(latest.read_text().strip()[5:]) >= 6):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = torch.load(latest_checkpoint(run) / ckpt.STATE_FILE, weights_only=True)
    assert 0 < state["iter_in_epoch"] < 5 and state["iteration"] < 12  # killed mid-epoch, before the end

    summary = engine_toy.main(["--out", str(run), *args, "--resume"])
    assert summary["iteration"] == 12
    ref, resumed = _weights(tmp_path / "ref"), _weights(run)
    assert ref.keys() == resumed.keys()
    for name in ref:
        assert torch.equal(ref[name], resumed[name]), name
    # The log is continued, not duplicated: same iterations and the same losses as the uninterrupted run.
    strip = lambda recs: [{k: v for k, v in r.items() if k != "time_per_iter"} for r in recs]  # noqa: E731
    assert strip(_records(run)) == strip(_records(tmp_path / "ref"))
    assert [r["iteration"] for r in _records(run) if "eval/mse" in r] == [4, 8, 12]


# (b) ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_process_gloo_with_grad_accum_matches_single_process(tmp_path):
    # SGD without clipping: a gradient scaled by the world size or grad_accum would show (Adam hides it).
    common = ["--max-iters", "7", "--batch-size", "8", "--optimizer", "sgd", "--clip-grad", "0"]
    engine_toy.main(["--out", str(tmp_path / "single"), *common])
    # --standalone: the rendezvous store binds a free port itself (a port picked here, then closed, could be
    # taken by another process before torchrun binds it)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
           TOY, "--out", str(tmp_path / "ddp"), *common, "--grad-accum", "2"]  # 8 = 2 ranks x 2 steps x 2
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    single, ddp = _weights(tmp_path / "single"), _weights(tmp_path / "ddp")
    for name in single:
        torch.testing.assert_close(ddp[name], single[name], atol=1e-5, rtol=0)
    # Only rank 0 logs: one record per log period and the end, no duplicates from rank 1.
    assert [r["iteration"] for r in _records(tmp_path / "ddp") if "loss" in r] == [2, 4, 6, 7]


def test_grad_accum_matches_one_big_batch(tmp_path):
    # SGD without clipping: unlike Adam or a clipped step, it would show a gradient scaled by grad_accum.
    args = ["--max-iters", "4", "--optimizer", "sgd", "--clip-grad", "0"]
    engine_toy.main(["--out", str(tmp_path / "a"), *args])
    engine_toy.main(["--out", str(tmp_path / "b"), *args, "--grad-accum", "4"])
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0)


def test_batch_not_divisible_by_world_and_accum_is_an_error():
    with pytest.raises(ValueError, match="not divisible"):
        TrainConfig(out_dir="x", max_iters=1, batch_size=6, grad_accum=4)
    with pytest.raises(ValueError, match="world_size x grad_accum"):
        TrainConfig(out_dir="x", max_iters=1, batch_size=6, grad_accum=2).per_process_batch(world_size=2)


# (c) ------------------------------------------------------------------------------------------------------
def _cfg(**kw) -> TrainConfig:
    return TrainConfig(out_dir="unused", max_iters=100, lr=1.0, **kw)


@pytest.mark.parametrize("kw, expected", [
    (dict(schedule="poly"), {0: 1.0, 50: 0.5 ** 0.9, 99: 0.01 ** 0.9, 100: 0.0}),
    (dict(schedule="poly", warmup_iters=10), {0: 0.1, 4: 0.5 * 0.96 ** 0.9, 9: 0.91 ** 0.9, 10: 0.9 ** 0.9}),
    (dict(schedule="cosine"), {0: 1.0, 25: 0.5 * (1 + math.sqrt(0.5)), 50: 0.5, 100: 0.0}),
    (dict(schedule="step", milestones=(60, 30), gamma=0.1), {0: 1.0, 29: 1.0, 30: 0.1, 59: 0.1, 60: 0.01}),
    (dict(schedule="constant", warmup_iters=4), {0: 0.25, 1: 0.5, 3: 1.0, 80: 1.0}),
])
def test_schedule_values_at_hand_checked_iterations(kw, expected):
    factor = lr_factor(_cfg(**kw), 100)
    for i, value in expected.items():
        assert factor(i) == pytest.approx(value, abs=1e-12), i


def test_scheduler_steps_per_iteration_and_keeps_lr_multipliers():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    config = _cfg(schedule="step", milestones=(3,), gamma=0.5, warmup_iters=2)
    optimizer = build_optimizer(model, config, [{"params": model[0].parameters(), "lr_mult": 0.1}])
    scheduler = build_scheduler(optimizer, config, 100)
    seen = []
    for _ in range(5):
        seen.append({g["name"]: g["lr"] for g in optimizer.param_groups})
        optimizer.step()
        scheduler.step()
    expected = [0.5, 1.0, 1.0, 0.5, 0.5]  # warm-up (1/2, 2/2), then x0.5 from iteration 3
    assert [s["default/decay"] for s in seen] == pytest.approx(expected)
    assert [s["group0/decay"] for s in seen] == pytest.approx([0.1 * e for e in expected])


# (d) ------------------------------------------------------------------------------------------------------
class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.head = nn.Linear(3, 5, bias=False)
        self.head.weight = self.embed.weight  # shared tensor: safetensors must store it once


def _save(out: Path, iteration: int, model: nn.Module, optimizer=None, keep_last: int = 0) -> Path:
    state = {"iteration": iteration, "optimizer": optimizer.state_dict() if optimizer else {},
             "rng": [ckpt.rng_state()]}
    return save_checkpoint(out, iteration, model, state, {"train": {}}, keep_last)


def test_checkpoint_round_trip_with_tied_weights_optimizer_and_rng(tmp_path):
    torch.manual_seed(0)
    model = Tied()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model.head(model.embed(torch.tensor([1, 2]))).sum().backward()
    optimizer.step()
    path = _save(tmp_path, 7, model, optimizer)
    assert latest_checkpoint(tmp_path) == path and path.name == "iter_00000007"
    expected_random = (torch.rand(3), np.random.rand(3), __import__("random").random())

    fresh = Tied()
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    state = load_checkpoint(path, fresh, fresh_opt)
    assert torch.equal(fresh.embed.weight, model.embed.weight)
    assert fresh.head.weight.data_ptr() == fresh.embed.weight.data_ptr()  # still tied after loading
    exp_avg = [o.state_dict()["state"][0]["exp_avg"] for o in (fresh_opt, optimizer)]
    assert torch.equal(*exp_avg)
    ckpt.set_rng_state(state["rng"][0])
    assert torch.equal(torch.rand(3), expected_random[0])
    assert np.array_equal(np.random.rand(3), expected_random[1])
    assert __import__("random").random() == expected_random[2]


def test_interrupted_write_is_ignored_and_swept(tmp_path, monkeypatch):
    model = Tied()
    good = _save(tmp_path, 1, model)
    # A write killed half-way leaves a temporary folder: it is not a checkpoint.
    leftover = ckpt.checkpoint_root(tmp_path) / ".tmp-iter_00000002-12345"
    leftover.mkdir()
    (leftover / ckpt.MODEL_FILE).write_bytes(b"partial")
    assert latest_checkpoint(tmp_path) == good

    # A write that fails after the weights: neither `latest` nor a final folder may appear.
    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, 3, model)
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path) == good
    assert not (ckpt.checkpoint_root(tmp_path) / "iter_00000003").exists()

    newest = _save(tmp_path, 4, model)
    assert latest_checkpoint(tmp_path) == newest
    assert not list(ckpt.checkpoint_root(tmp_path).glob(".tmp-*"))  # the next save swept the leftovers


def test_keep_last_and_broken_latest(tmp_path):
    model = Tied()
    for it in (1, 2, 3, 4):
        _save(tmp_path, it, model, keep_last=2)
    root = ckpt.checkpoint_root(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["iter_00000003", "iter_00000004", "latest"]
    assert latest_checkpoint(tmp_path / "nothing") is None
    (root / "latest").write_text("iter_00000001\n")  # points at a pruned folder
    with pytest.raises(RuntimeError, match="not a complete checkpoint"):
        latest_checkpoint(tmp_path)


def test_fresh_run_over_an_old_one_or_resume_with_another_data_order_is_refused(tmp_path):
    engine_toy.main(["--out", str(tmp_path), "--max-iters", "2"])
    with pytest.raises(FileExistsError, match="resume=True"):
        engine_toy.main(["--out", str(tmp_path), "--max-iters", "2"])
    with pytest.raises(ValueError, match="data order"):
        engine_toy.main(["--out", str(tmp_path), "--max-iters", "4", "--batch-size", "4", "--resume"])


# (e) ------------------------------------------------------------------------------------------------------
def test_bf16_autocast_runs_on_cpu(tmp_path):
    summary = engine_toy.main(["--out", str(tmp_path), "--max-iters", "3", "--amp", "bf16"])
    assert summary["iteration"] == 3 and all(math.isfinite(v) for v in summary["losses"].values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_with_grad_scaler_runs_on_cuda(tmp_path):
    args = ["--max-iters", "6", "--amp", "fp16", "--device", "cuda", "--save-every", "3"]
    summary = engine_toy.main(["--out", str(tmp_path), *args])
    assert all(math.isfinite(v) for v in summary["losses"].values())
    state = torch.load(latest_checkpoint(tmp_path) / ckpt.STATE_FILE, weights_only=True)
    assert state["scaler"]["scale"] > 0 and "cuda" in state["rng"][0]


def test_fp16_on_cpu_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        engine_toy.main(["--out", str(tmp_path), "--max-iters", "1", "--amp", "fp16"])


# (f) ------------------------------------------------------------------------------------------------------
class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.absolute_pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
        self.relative_position_bias_table = nn.Parameter(torch.zeros(9, 2))
        self.level_embed = nn.Parameter(torch.zeros(3, 4))
        self.transposed = nn.ConvTranspose2d(4, 4, 2)  # "pos" inside a word is not a position table
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 1)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def test_no_weight_decay_groups_and_lr_multipliers():
    model = Net()
    backbone = {"params": model.backbone.parameters(), "lr_mult": 0.1, "name": "bb"}
    groups = build_param_groups(model, weight_decay=0.05, lr=1.0, groups=[backbone])
    names = {id(p): n for n, p in model.named_parameters()}
    by_group = {g["name"]: (sorted(names[id(p)] for p in g["params"]), g["weight_decay"], g["lr"])
                for g in groups}
    assert by_group == {
        "bb/decay": (["backbone.0.weight"], 0.05, 0.1),
        "bb/no_decay": (["backbone.0.bias", "backbone.1.bias", "backbone.1.weight"], 0.0, 0.1),
        "default/decay": (["head.weight", "transposed.weight"], 0.05, 1.0),
        "default/no_decay": (["absolute_pos_embed", "head.bias", "level_embed", "norm.bias", "norm.weight",
                              "relative_position_bias_table", "transposed.bias"], 0.0, 1.0),
    }
    with pytest.raises(ValueError, match="two param groups"):
        build_param_groups(model, 0.05, 1.0, [{"params": [model.head.weight]}] * 2)


def test_tensorboard_without_the_package_is_a_clear_message(tmp_path):
    if importlib.util.find_spec("tensorboard") is not None:
        logger = MetricLogger(tmp_path, enabled=True, total_iters=1, tensorboard=True)
        logger.log({"iteration": 1, "loss": 1.0}, echo=False)
        logger.close()
        assert (tmp_path / "tensorboard").is_dir()
    else:
        with pytest.warns(UserWarning, match="tensorboard.*not installed"):
            MetricLogger(tmp_path, enabled=True, total_iters=1, tensorboard=True).close()


# sampler --------------------------------------------------------------------------------------------------
def test_sampler_splits_the_same_global_batches_across_ranks_and_accumulation():
    data = engine_toy.ToyDataset(21)
    single = ResumableBatchSampler(data, 8, seed=3)
    single.set_epoch(1)
    ranks = [ResumableBatchSampler(data, 2, world_size=2, rank=r, grad_accum=2, seed=3) for r in range(2)]
    for s in ranks:
        s.set_epoch(1)
    per_rank = [list(s) for s in ranks]  # each: iterations x 2 micro-batches of 2
    assert len(single) == 2 and all(len(s) == 4 for s in ranks)  # 21 // 8 = 2 iterations (drop_last)
    for it, batch in enumerate(single):
        merged = [i for a in range(2) for r in range(2) for i in per_rank[r][2 * it + a]]
        assert merged == batch
    assert data.epochs_seen[-1] == 1

    padded = ResumableBatchSampler(data, 8, seed=3, drop_last=False)
    padded.set_epoch(0)
    flat = [i for b in padded for i in b]
    assert len(flat) == 24 and sorted(set(flat)) == list(range(21))  # 3 padding samples repeat the start
    assert flat[21:] == flat[:3]


def test_sampler_resumes_at_the_exact_batch_and_rejects_tiny_datasets():
    data = engine_toy.ToyDataset(40)
    full = ResumableBatchSampler(data, 4, seed=0)
    full.set_epoch(2)
    resumed = ResumableBatchSampler(data, 4, seed=0)
    resumed.set_epoch(2, start_iter=7)
    assert list(resumed) == list(full)[7:]
    other_epoch = ResumableBatchSampler(data, 4, seed=0)
    other_epoch.set_epoch(3)
    assert list(other_epoch) != list(full)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ResumableBatchSampler(engine_toy.ToyDataset(3), 4)


def test_config_json_round_trip_and_validation():
    config = TrainConfig(out_dir="o", epochs=3, milestones=(5, 9), betas=(0.8, 0.9))
    assert TrainConfig.from_json(json.dumps(config.to_dict())) == config
    with pytest.raises(ValueError, match="exactly one"):
        TrainConfig(out_dir="o", max_iters=3, epochs=3)
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(out_dir="o", max_iters=3, schedule="linear")
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"out_dir": "o", "max_iters": 1, "lr_typo": 1})


def test_epochs_eval_and_metrics_log(tmp_path):
    # 2 epochs of 24 samples in global batches of 8, drop_last: 3 iterations each.
    summary = engine_toy.main(["--out", str(tmp_path), "--epochs", "2", "--n", "24", "--eval-every", "2",
                               "--log-every", "0"])
    assert summary["iteration"] == 6 and summary["epoch"] == 2
    records = _records(tmp_path)
    assert [r["iteration"] for r in records if "eval/mse" in r] == [2, 4, 6]
    train_records = [r for r in records if "loss" in r]
    assert len(train_records) == 1 and train_records[0]["iteration"] == 6  # log_every=0: only the end
    assert train_records[0]["epoch"] == 2.0
    rec = train_records[0]
    assert set(rec) == {"iteration", "epoch", "lr", "loss", "loss_mse", "loss_l1", "time_per_iter"}
    assert rec["loss"] == pytest.approx(rec["loss_mse"] + rec["loss_l1"])
    assert summary["eval"]["mse"] == records[-1]["eval/mse"]
    saved = json.loads((latest_checkpoint(tmp_path) / ckpt.CONFIG_FILE).read_text())
    assert saved["model"] == {"dim": 4, "hidden": 16} and saved["train"]["epochs"] == 2


# (g) ------------------------------------------------------------------------------------------------------
def test_weight_ema_by_hand_and_what_it_leaves_alone():
    torch.manual_seed(0)
    model = Net()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    ema = WeightEMA(model, decay=0.5)
    assert "frozen.weight" not in ema.shadow and "backbone.1.num_batches_tracked" not in ema.shadow
    assert "backbone.1.running_mean" in ema.shadow and "head.weight" in ema.shadow
    with torch.no_grad():
        for value in model.state_dict().values():
            value.add_(1)  # every tensor moves by one, the frozen and integer ones too
    ema.update(model)  # a_1 = 1: the average is w_1, the start does not linger
    torch.testing.assert_close(ema.shadow["head.weight"], start["head.weight"] + 1)
    torch.testing.assert_close(ema.shadow["backbone.1.running_mean"], start["backbone.1.running_mean"] + 1)
    with torch.no_grad():
        model.head.weight.add_(3)  # w_2 = w_1 + 3
    ema.update(model)  # a_2 = 0.5 / 0.75: avg_2 = (0.5 w_1 + w_2) / 1.5, the weights decay ** (t - s)
    torch.testing.assert_close(ema.shadow["head.weight"], start["head.weight"] + 1 + 3 / 1.5)
    for _ in range(30):
        ema.update(model)  # w stays put: the average converges to it, at rate decay per step
    torch.testing.assert_close(ema.shadow["head.weight"], start["head.weight"] + 4, atol=1e-6, rtol=0)
    ema.copy_to(model)
    torch.testing.assert_close(model.head.weight, start["head.weight"] + 4, atol=1e-6, rtol=0)
    assert torch.equal(model.frozen.weight, start["frozen.weight"] + 1)  # not averaged: left as it is
    with pytest.raises(ValueError, match="decay must be in"):
        WeightEMA(model, decay=1.0)


def _toy_run(out: Path, ema_decay: float, resume: bool = False) -> tuple[nn.Module, dict]:
    torch.manual_seed(0)
    model = engine_toy.ToyModel(engine_toy.ToyConfig())
    config = TrainConfig(out_dir=str(out), max_iters=8, batch_size=8, lr=0.05, schedule="poly", warmup_iters=2,
                         clip_grad=1.0, save_every=4, keep_last=3, device="cpu", resume=resume,
                         ema_decay=ema_decay)
    return model, train(model, engine_toy.ToyDataset(40), config)


def test_ema_run_returns_the_average_keeps_the_live_weights_and_resumes_exactly(tmp_path):
    model, summary = _toy_run(tmp_path / "a", 0.8)
    assert summary["weights"] == "average"
    final = latest_checkpoint(tmp_path / "a")
    live, state = load_file(final / ckpt.MODEL_FILE), torch.load(final / ckpt.STATE_FILE, weights_only=True)
    assert state["ema"]["updates"] == 8
    for name, value in model.state_dict().items():
        assert torch.equal(value, state["ema"]["shadow"][name]), name
    assert not torch.equal(live["fc1.weight"], model.fc1.weight)  # the checkpoint holds the live weights

    fresh = engine_toy.ToyModel(engine_toy.ToyConfig())
    assert apply_saved_average(load_checkpoint(final, fresh), fresh)  # how a finished stage is reloaded
    assert torch.equal(fresh.fc1.weight, model.fc1.weight)

    # resumed from the iteration-4 checkpoint: the same average and live weights as the uninterrupted run
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    shutil.copytree(ckpt.checkpoint_dir(tmp_path / "a", 4), ckpt.checkpoint_dir(tmp_path / "b", 4))
    (tmp_path / "b" / "checkpoints" / "latest").write_text("iter_00000004\n")
    resumed, _ = _toy_run(tmp_path / "b", 0.8, resume=True)
    for name, value in model.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    assert torch.equal(load_file(latest_checkpoint(tmp_path / "b") / ckpt.MODEL_FILE)["fc1.weight"],
                       live["fc1.weight"])


def test_ema_resume_from_a_run_without_an_average_is_refused(tmp_path):
    model, summary = _toy_run(tmp_path, 0.0)
    assert summary["weights"] == "live" and torch.load(
        latest_checkpoint(tmp_path) / ckpt.STATE_FILE, weights_only=True)["ema"] is None
    with pytest.raises(ValueError, match="kept no weight average"):
        _toy_run(tmp_path, 0.8, resume=True)
    _toy_run(tmp_path / "ema", 0.8)
    with pytest.raises(ValueError, match="has decay 0.8, this run asks for 0.9"):
        _toy_run(tmp_path / "ema", 0.9, resume=True)
    with pytest.raises(ValueError, match=r"ema_decay must be in \[0, 1\)"):
        TrainConfig(out_dir=str(tmp_path), max_iters=1, ema_decay=1.5)
