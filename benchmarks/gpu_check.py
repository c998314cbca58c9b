"""Every builder on a CUDA GPU: correctness of the CUDA and bf16 paths, and their speed.

Run on a machine with a CUDA GPU (the test suite never needs one):

    python benchmarks/gpu_check.py --out OUT          # OUT/gpu_check.md + OUT/gpu_check.json (~4 min on an H200)
    python benchmarks/gpu_check.py --out OUT --smoke  # tiny sizes; also runs on a CPU (checks the script)
    .venv/bin/python benchmarks/gpu_check.py --render OUT/gpu_check.json [more.json] --write
                                                      # -> benchmarks/results/gpu_check.md

For each model at its own input size, random weights (correctness and speed do not depend on them; text towers
are random BERTs of the real shapes: bert-base for paper scale, all-MiniLM-L6-v2's 6 x 384 for lite):
  - one fp32 train step on CUDA and one under bf16 autocast, on the same weights and batch: every loss finite,
    every gradient finite, the bf16 loss against the fp32 one;
  - eval: the same weights in fp32 on the CPU and on CUDA (TF32 off), and under bf16 autocast on CUDA: for masks
    the relative L2 error of the logits against the CPU's (and the IoU of the thresholded masks), for re-id the
    cosine of the test features;
  - speed (TF32 on for fp32): inference images/s (clips: frames/s) at a batch, fp32 and bf16; a bf16 train step
    (forward, backward, AdamW) at a batch; peak CUDA memory.
Then the CLI end to end on CUDA with bf16 autocast (`--amp bf16`), on generated data: `train alignformer_lite`,
`rvos train twostream_lite --set query_decoder=true` killed and resumed, `reid train clip4vireid_lite` (three
stages; the re-id loop keeps fp32).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))  # sibling modules (report.py)
from vlalign.models.pretrained import build_model  # noqa: E402

SENTENCE = "the man in the red shirt on the left moving to the right"
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(SENTENCE.split()))]
EFN_VOCAB = ["<pad>", "<unk>", *sorted(set(SENTENCE.split()))]


def bert_dir(hidden: int, layers: int, heads: int, inter: int) -> str:
    """A folder with a BERT config of these numbers and a small vocabulary (weights stay random)."""
    import transformers

    path = Path(tempfile.mkdtemp(prefix=f"bert{hidden}x{layers}_"))
    transformers.BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                            intermediate_size=inter).save_pretrained(path)
    (path / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    return str(path)


def models(smoke: bool) -> list[tuple[str, str, dict, int, int]]:
    """(row name, builder, overrides, inference batch, train batch)."""
    from vlalign.models.clip.model import ClipConfig, tiny_clip_config

    base = bert_dir(768, 12, 12, 3072) if not smoke else bert_dir(32, 1, 2, 64)
    mini = bert_dir(384, 6, 12, 1536) if not smoke else base
    lite = {"pretrained_backbone": False, "pretrained_text": False, "text_dir": mini}
    paper = {"pretrained_text": False, "text_dir": base}
    clip = ClipConfig() if not smoke else tiny_clip_config(image_size=(64, 32))
    small = {"input_size": 64} if smoke else {}
    rows = [
        ("alignformer_swin_b", "alignformer_swin_b", {**paper, **small}, 16, 4),
        ("alignformer_lite", "alignformer_lite", {**lite, **small}, 64, 16),
        ("efn_resnet101", "efn_resnet101", {"pretrained_backbone": False, "vocab": EFN_VOCAB, **small}, 16, 8),
        ("efn_lite", "efn_lite", {"pretrained_backbone": False, "vocab": EFN_VOCAB, **small}, 64, 16),
        ("twostream_r101", "twostream_r101", {**paper, **small}, 4, 2),
        ("twostream_lite", "twostream_lite", {**lite, **small, "query_decoder": False}, 16, 8),
        ("twostream_lite + queries", "twostream_lite", {**lite, **small, "query_decoder": True}, 16, 8),
        ("clip4vireid_vitb16", "clip4vireid_vitb16",
         {"pretrained_backbone": False, "clip_config": dataclasses.asdict(clip),
          **({"image_size": (64, 32)} if smoke else {})}, 256, 64),
        ("clip4vireid_lite", "clip4vireid_lite", {**lite, **({"image_size": (64, 32)} if smoke else {})}, 256, 64),
    ]
    return rows if not smoke else [(n, b, o, 2, 4) for n, b, o, _, _ in rows]  # re-id triplets need 2 ids x 2


# ---- inputs and one call per family -----------------------------------------------------------------------
def batch(model, n: int, device) -> dict:
    """Random inputs (and targets) for n samples of this model's family, on `device`, from a fixed seed."""
    g = torch.Generator().manual_seed(0)
    config = model.config
    if hasattr(config, "stage_iters"):  # re-id: PK-style labels, both modalities
        h, w = config.image_size
        pid = torch.arange(n) // 2 % max(1, config.num_ids)
        out = {"image": torch.rand(n, 3, h, w, generator=g), "pid": pid, "modality": torch.arange(n) % 2}
    else:
        size = config.input_size
        tok = model.tokenize([SENTENCE] * n)
        shape = (n, config.num_frames, 3, size, size) if hasattr(config, "num_frames") else (n, 3, size, size)
        pixels = torch.rand(*shape, generator=g)
        target = (torch.rand(*shape[:-3], size, size, generator=g) > 0.7).float()
        out = {"pixels": pixels, "tokens": tok["tokens"], "token_mask": tok["token_mask"], "target": target}
    return {k: v.to(device) for k, v in out.items()}


def call(model, inputs: dict, train: bool) -> dict:
    if "pid" in inputs:
        if train:
            return model(image=inputs["image"], pid=inputs["pid"], modality=inputs["modality"])
        return {"features": model.extract(inputs["image"])}
    args = (inputs["pixels"], inputs["tokens"], inputs["token_mask"])
    if not train:
        return model(*args)
    if inputs["pixels"].ndim == 5:  # clips: masks, and object ids for the query decoder (1 = the referred one)
        return model(*args, masks=inputs["target"], objects=inputs["target"].long())
    return model(*args, target=inputs["target"])


def loss_of(out: dict) -> torch.Tensor:
    return sum(v for k, v in out.items() if k.startswith("loss_") and torch.is_tensor(v))


# ---- the device ---------------------------------------------------------------------------------------------
# "cuda"; "cpu" only for --smoke on a machine without a GPU, where autocast is off (bf16 convolutions are slow on
# a CPU) and there is nothing to synchronise or count.
DEVICE = "cuda"


def autocast(dtype: torch.dtype | None):
    """bf16 autocast on the GPU when dtype is given; fp32 otherwise."""
    return torch.autocast(DEVICE, dtype=dtype or torch.bfloat16, enabled=dtype is not None and DEVICE == "cuda")


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def set_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on


# ---- checks ---------------------------------------------------------------------------------------------------
def train_check(model, n: int) -> dict:
    """One fp32 and one bf16 train step from the same weights on the same batch (no optimizer step between)."""
    inputs = batch(model, n, DEVICE)
    model.train()
    losses = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same dropout / drop-path draws
        with autocast(dtype):
            out = call(model, inputs, train=True)
        loss = loss_of(out)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        losses[name] = {"loss": loss.item(), "finite_losses": all(torch.isfinite(v).all().item() for k, v in
                                                                    out.items() if k.startswith("loss_")),
                        "finite_grads": all(torch.isfinite(gr).all().item() for gr in grads),
                        "params_with_grad": len(grads)}
    model.zero_grad(set_to_none=True)
    model.eval()
    return losses


@torch.no_grad()
def eval_check(model, n: int) -> dict:
    """fp32 CPU vs fp32 CUDA (TF32 off) vs bf16 CUDA, same weights and inputs."""
    model.eval()
    inputs = batch(model, n, "cpu")
    cpu = call(model.cpu(), inputs, train=False)
    model.to(DEVICE)
    inputs = {k: v.to(DEVICE) for k, v in inputs.items()}
    set_tf32(False)
    gpu = call(model, inputs, train=False)
    with autocast(torch.bfloat16):
        half = call(model, inputs, train=False)
    set_tf32(True)
    key = "features" if "features" in cpu else "logits"
    ref = cpu[key].float()
    out = {}
    for name, other in (("cuda_fp32", gpu[key].float().cpu()), ("cuda_bf16", half[key].float().cpu())):
        if key == "features":
            out[name] = {"min_cosine": torch.nn.functional.cosine_similarity(ref, other, dim=-1).min().item()}
        else:
            a, b = ref > 0, other > 0
            union = (a | b).sum().item()
            # random weights put many logits near 0, where the thresholded masks flip on any rounding: the
            # relative L2 error of the logits is the measure; the IoU is reported beside it
            out[name] = {"rel_l2": ((ref - other).norm() / ref.norm()).item(),
                         "mask_iou": (a & b).sum().item() / union if union else 1.0}
    return out


def timed(fn, repeats: int) -> float:
    """Median seconds of fn() after two warm-ups, synchronised."""
    fn()
    fn()
    sync()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - tic)
    return sorted(times)[len(times) // 2]


def speed(model, n_infer: int, n_train: int, repeats: int) -> dict:
    model.to(DEVICE).eval()
    inputs = batch(model, n_infer, DEVICE)
    frames = n_infer * (inputs["pixels"].shape[1] if "pixels" in inputs and inputs["pixels"].ndim == 5 else 1)
    out = {"params_m": sum(p.numel() for p in model.parameters()) / 1e6, "infer_batch": n_infer,
           "images_per_batch": frames}
    for name, dtype in (("fp32_tf32", None), ("bf16", torch.bfloat16)):
        def infer(dtype=dtype):
            with torch.inference_mode(), autocast(dtype):
                call(model, inputs, train=False)
        out[f"infer_{name}_img_s"] = frames / timed(infer, repeats)
    inputs = batch(model, n_train, DEVICE)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    model.train()
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step():
        with autocast(torch.bfloat16):
            loss = loss_of(call(model, inputs, train=True))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    out["train_batch"] = n_train
    out["train_step_bf16_s"] = timed(step, repeats)
    out["train_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else 0.0
    model.eval()
    return out


def check_model(row, smoke: bool) -> dict:
    name, builder, overrides, n_infer, n_train = row
    torch.manual_seed(0)
    model = build_model(builder, **overrides)
    if hasattr(model, "set_stage"):
        model.set_stage(2)  # IFE: the whole image encoder trains
    result = {"eval": eval_check(model, 2)}  # moves it to CUDA
    result["train"] = train_check(model, min(n_train, 8))
    result["speed"] = speed(model, n_infer, n_train, 3 if smoke else 10)
    return result


# ---- the CLI on CUDA ------------------------------------------------------------------------------------------
def cli(*args: str, timeout: float = 600, kill_after: float | None = None) -> dict:
    """Run `python -m vlalign.cli ARGS`; optionally SIGKILL it after kill_after seconds (a crash mid-run)."""
    tic = time.perf_counter()
    print("$ vlalign", *args[:3], "...", flush=True)
    cmd = [sys.executable, "-m", "vlalign.cli", *args]
    if kill_after is None:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return {"rc": done.returncode, "s": time.perf_counter() - tic, "tail": (done.stdout + done.stderr)[-600:]}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(kill_after)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return {"rc": proc.returncode, "s": time.perf_counter() - tic, "killed": proc.returncode == -9}


def cli_checks(work: Path, smoke: bool, device: str) -> dict:
    mini = bert_dir(384, 6, 12, 1536) if not smoke else bert_dir(32, 1, 2, 64)
    lite = ["pretrained_backbone=false", "pretrained_text=false", f"text_dir={mini}"]
    amp = "bf16" if device == "cuda" else "none"
    out = {}
    iters = 6 if smoke else 80
    out["synth_refcoco"] = cli("synth", "refcoco", "--out", str(work / "refcoco"), "--num-images",
                               "8" if smoke else "64")
    out["train_alignformer_lite"] = cli(
        "train", "alignformer_lite", "--data", str(work / "refcoco"), "--out", str(work / "af"), "--iters",
        str(iters), "--batch-size", "2" if smoke else "16", "--amp", amp, "--device", device, "--set", *lite,
        *(["input_size=64"] if smoke else []))
    out["synth_ytvos"] = cli("synth", "ytvos", "--out", str(work / "ytvos"), "--num-videos", "6" if smoke else "24",
                           "--seed", "0")
    rvos = ["rvos", "train", "twostream_lite", "--data", str(work / "ytvos"), "--out", str(work / "rv"),
            "--batch-size", "8", "--amp", amp, "--device", device, "--save-every", "20",
            "--set", *lite, "query_decoder=true", *(["input_size=64"] if smoke else [])]
    out["rvos_killed"] = cli(*rvos, "--iters", str(iters), "--no-final-eval", kill_after=5 if smoke else 30)
    out["rvos_killed"]["had_checkpoint"] = (work / "rv" / "checkpoints" / "latest").exists()
    out["rvos_resumed"] = cli(*rvos, "--iters", str(iters), "--resume")
    lines = [json.loads(s) for s in (work / "rv" / "metrics.jsonl").read_text().splitlines() if s.strip()]
    out["rvos_resumed"]["last_iteration"] = max((r.get("iteration", 0) for r in lines), default=0)
    results = work / "rv" / "results.json"
    if results.exists():
        out["rvos_resumed"]["J&F"] = json.loads(results.read_text())["results"]["valid"]["J&F-Mean"]
    out["synth_sysu"] = cli("synth", "sysu", "--out", str(work / "sysu"), "--num-ids", "24", "--seed", "0")
    stage = "4" if smoke else "30"
    out["reid_train"] = cli("reid", "train", "clip4vireid_lite", "--data", str(work / "sysu"), "--out",
                            str(work / "reid"), "--iters", stage, stage, stage, "--batch-size", "16", "16", "16",
                            "--trials", "2", "--device", device, "--set", *lite, "num_instances=4",
                            *(["image_size=[64,32]"] if smoke else []))
    return out


# ---- the report -----------------------------------------------------------------------------------------------
def render(paths: list[str]) -> str:
    """Markdown tables from one or more gpu_check.json files (later files add rows and CLI steps)."""
    reports = [json.loads(Path(p).read_text()) for p in paths]
    models = {k: v for r in reports for k, v in r["models"].items()}
    steps = {k: v for r in reports for k, v in r["cli"].items()}
    first = reports[0]
    lines = [f"# Every builder on a GPU\n\nMeasured on one {first['device']} (torch {first['torch']}, Python "
             f"{first['python']}) with `benchmarks/gpu_check.py`: random weights at each model's own input size, "
             "BERT-shaped random text towers (bert-base for paper scale, 6 x 384 for lite). Correctness: the same "
             "weights and inputs in fp32 on the CPU, fp32 on CUDA (TF32 off) and bf16 autocast on CUDA; relative "
             "L2 error of the mask logits (re-id: the smallest cosine of the test features) against the CPU. Train: "
             "one fp32 and one bf16 step from the same weights on the same batch; 'finite' = every loss and every "
             "gradient finite, with as many parameters getting a gradient under bf16 as under fp32.\n",
             "| model | params (M) | CUDA fp32 vs CPU | bf16 vs CPU | loss fp32 / bf16 | finite, same grads |",
             "|---|---:|---:|---:|---:|---|"]
    for name, r in models.items():
        if "error" in r:
            lines.append(f"| {name} | error: {r['error'].splitlines()[-1]} | | | | |")
            continue
        e, t = r["eval"], r["train"]

        def err(d):
            return f"cos {d['min_cosine']:.6f}" if "min_cosine" in d else f"{d['rel_l2']:.1e}"
        ok = all(t[d]["finite_losses"] and t[d]["finite_grads"] for d in t) and \
            t["fp32"]["params_with_grad"] == t["bf16"]["params_with_grad"]
        lines.append(f"| {name} | {r['speed']['params_m']:.1f} | {err(e['cuda_fp32'])} | {err(e['cuda_bf16'])} | "
                     f"{t['fp32']['loss']:.4f} / {t['bf16']['loss']:.4f} | {'yes' if ok else 'NO'} "
                     f"({t['bf16']['params_with_grad']}) |")
    lines += ["\n## Speed\n\nInference: images per second (clips: frames) of the model's forward under "
              "`torch.inference_mode` on one batch already on the GPU, median of 10 after 2 warm-ups, fp32 with "
              "TF32 on and bf16 autocast. Train step: forward, backward and AdamW under bf16 autocast, median of 10; "
              "peak CUDA memory of the train steps.\n",
              "| model | infer batch | img/s fp32 (TF32) | img/s bf16 | train batch | train step bf16 (ms) | "
              "train peak (GiB) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in models.items():
        if "error" in r:
            continue
        s = r["speed"]
        unit = f" clips ({s['images_per_batch']} frames)" if s["images_per_batch"] != s["infer_batch"] else ""
        lines.append(f"| {name} | {s['infer_batch']}{unit} | {s['infer_fp32_tf32_img_s']:.0f} | "
                     f"{s['infer_bf16_img_s']:.0f} | {s['train_batch']} | {1000 * s['train_step_bf16_s']:.0f} | "
                     f"{s['train_peak_gib']:.2f} |")
    if steps:
        lines += ["\n## The CLI on CUDA\n", "| step | exit | seconds | note |", "|---|---:|---:|---|"]
        for name, r in steps.items():
            if name == "error":
                lines.append(f"| error | | | {r.splitlines()[-1]} |")
                continue
            note = ", ".join(f"{k} {v}" for k, v in r.items() if k in ("killed", "had_checkpoint", "last_iteration"))
            lines.append(f"| {name} | {r['rc']} | {r['s']:.1f} | {note} |")
    lines += ["", f"- Rendered with: `.venv/bin/python benchmarks/gpu_check.py --render {' '.join(paths)} --write`",
              "- Run on the GPU machine (vlalign on PYTHONPATH, pycocotools and the CLIP BPE vocabulary beside it): "
              "`python3 benchmarks/gpu_check.py --out OUT` (the CLI steps of this table: a second run with "
              "`--skip-models`, the first having hit its time limit in them)",
              f"- Date: {date.today()}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", help="folder for gpu_check.json (a run on the GPU)")
    p.add_argument("--render", nargs="+", metavar="JSON", help="print (--write: publish) the report of runs")
    p.add_argument("--write", action="store_true")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--only", nargs="*", default=None, help="row names to check (default: all)")
    p.add_argument("--skip-cli", action="store_true")
    p.add_argument("--skip-models", action="store_true")
    args = p.parse_args(argv)
    if args.render:
        from report import publish  # sibling module

        publish(render(args.render), "gpu_check.md", args.write)
        return 0
    if not args.out:
        p.error("--out is required (or --render)")
    if not torch.cuda.is_available() and not args.smoke:
        raise SystemExit("gpu_check needs CUDA (or --smoke)")
    global DEVICE
    DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: --smoke exercises the script
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (smoke)",
              "torch": torch.__version__, "python": platform.python_version(), "models": {}, "cli": {}}
    tic = time.perf_counter()
    for row in models(args.smoke):
        if args.skip_models or (args.only and row[0] not in args.only):
            continue
        try:
            report["models"][row[0]] = check_model(row, args.smoke)
        except Exception:  # one model's failure is a result; the others still run
            report["models"][row[0]] = {"error": traceback.format_exc()[-1500:]}
        print(row[0], json.dumps(report["models"][row[0]]), flush=True)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    if not args.skip_cli:
        try:
            with tempfile.TemporaryDirectory() as work:
                report["cli"] = cli_checks(Path(work), args.smoke, DEVICE)
        except Exception:
            report["cli"]["error"] = traceback.format_exc()[-1500:]
        print("cli", json.dumps(report["cli"]), flush=True)
    report["seconds"] = time.perf_counter() - tic
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
