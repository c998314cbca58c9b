"""Speed of AlignFormer on this machine: latency, throughput, FLOPs, fraction of the measured matmul peak,
training step time and peak memory.

    .venv/bin/python benchmarks/speed_alignformer.py --write     # -> benchmarks/results/speed_alignformer.md

Random weights (speed does not depend on them); paper scale uses a BERT-base-shaped random text encoder.
FLOPs are counted with torch.utils.flop_counter (matmuls and convolutions only).
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from report import publish
from torch.utils.flop_counter import FlopCounterMode

from vlalign.models.pretrained import build_model

RESULTS = Path(__file__).parent / "results" / "speed_alignformer.md"


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Dense fp32 matmul GFLOP/s, the reference peak of this process."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def bert_base_dir() -> str:
    """A folder with bert-base-uncased's shape (config + a small vocab); weights stay random."""
    import transformers

    path = Path(tempfile.mkdtemp(prefix="bert_base_shape"))
    transformers.BertConfig().save_pretrained(path)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "man", "on", "left", "in", "red", "shirt"]
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    return str(path)


def inputs(model, batch: int):
    size = model.config.input_size
    tok = model.tokenize(["the man in the red shirt on the left"] * batch)
    return torch.rand(batch, 3, size, size), tok["tokens"], tok["token_mask"]


@torch.inference_mode()
def latency(model, batch: int, repeats: int) -> float:
    image, tokens, mask = inputs(model, batch)
    model(image, tokens, mask)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model(image, tokens, mask)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def flops(model) -> float:
    # Parameters are frozen while counting: FlopCounterMode's module tracker cannot hook a parameter that is
    # passed as a module input (the learned word positions) under no_grad / inference_mode.
    image, tokens, mask = inputs(model, 1)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    with FlopCounterMode(display=False) as counter:
        model(image, tokens, mask)
    for p in params:
        p.requires_grad_(True)
    return counter.get_total_flops()


def train_step(model, batch: int, repeats: int = 3) -> float:
    image, tokens, mask = inputs(model, batch)
    target = (torch.rand(batch, *image.shape[-2:]) > 0.5).float()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        out = model(image, tokens, mask, target=target)
        sum(v for k, v in out.items() if k.startswith("loss_")).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    model.eval()
    return statistics.median(times[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-paper-scale", action="store_true")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # before the first parallel op (shared/docs/performance.md)
    peak = matmul_peak()
    print(f"matmul peak: {peak:.0f} GFLOP/s")
    variants = [("alignformer_lite", {"pretrained_backbone": False, "pretrained_text": False}, 8, 4)]
    if not args.skip_paper_scale:
        variants.insert(0, ("alignformer_swin_b", {"text_dir": bert_base_dir(), "pretrained_text": False}, 2, 1))
    rows = []
    for name, overrides, batch, step_batch in variants:
        model = build_model(name, **overrides).eval()
        params = sum(p.numel() for p in model.parameters()) / 1e6
        gflop = flops(model) / 1e9
        one = latency(model, 1, repeats=3)
        many = latency(model, batch, repeats=2)
        step = train_step(model, step_batch)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        rows.append((name, model.config.input_size, params, gflop, one, batch / many, batch, gflop / one / peak,
                     step, step_batch, rss))
        print(rows[-1])
        del model
    header = ("| model | input | params (M) | GFLOP/image | latency b=1 (s) | throughput (img/s) | "
              "% of matmul peak (b=1) | train step (s) | peak RSS so far (GiB) |\n"
              "|---|---|---|---|---|---|---|---|---|")
    lines = [header] + [
        f"| {n} | {s}x{s} | {p:.1f} | {g:.1f} | {o:.3f} | {t:.2f} (b={b}) | {100 * f:.0f}% | {st:.2f} (b={sb}) | "
        f"{r:.2f} |" for n, s, p, g, o, t, b, f, st, sb, r in rows]
    text = (f"# AlignFormer speed on this machine\n\nMeasured {date.today()} on {platform.processor() or 'x86_64'}"
            f" ({torch.get_num_threads()} threads, torch {torch.__version__}, flush-to-zero on), random weights,"
            f" fp32. Matmul peak in the same process: {peak:.0f} GFLOP/s.\n\n"
            f"Reproduce: `.venv/bin/python benchmarks/speed_alignformer.py --write`\n\n" + "\n".join(lines) + "\n")
    publish(text, RESULTS.name, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
