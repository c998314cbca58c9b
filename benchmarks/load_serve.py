"""Load test of `vlalign serve` on loopback: a bounded number of concurrent clients, each sending a fixed number
of image-segmentation requests through gradio's queue; reports p50 / p95 / max latency and counts failures
(there must be none: a burst waits in the queue instead of failing).

    .venv/bin/python benchmarks/load_serve.py                       # runs/demo/model if present, else a tiny model
    .venv/bin/python benchmarks/load_serve.py --clients 8 --requests 5 --write

Every request uploads the same real photo (scikit-image astronaut) and one expression. `--write` stores the
table in benchmarks/results/load_serve.md.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from report import footer, publish  # sibling module (benchmarks/ is on sys.path when run)

ROOT = Path(__file__).resolve().parents[1]


def tiny_model(folder: Path) -> Path:
    """A random alignformer_lite at 64x64 with a one-layer BERT: measures the server, not the model."""
    import torch
    import transformers

    from vlalign.models.pretrained import build_model, save_pretrained

    bert = folder / "bert"
    transformers.BertConfig(vocab_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=32).save_pretrained(bert)
    (bert / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "man", "suit"]))
    torch.manual_seed(0)
    model = build_model("alignformer_lite", text_dir=str(bert), input_size=64, pixel_dim=16, pixel_layers=1,
                        pixel_heads=2, pixel_ffn_dim=16, word_ffn_dim=16, query_dim=16, query_layers=1,
                        query_heads=2, query_ffn_dim=16, mask_dim=8, pretrained_backbone=False,
                        pretrained_text=False)
    return save_pretrained(model, folder / "model")


def start_server(weights: Path, port: int, concurrency: int) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vlalign.cli", "serve", "--weights", str(weights), "--models-root",
                             "", "--port", str(port), "--concurrency", str(concurrency)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("vlalign serve did not start") from None
            time.sleep(0.5)


def run_clients(url: str, weights: Path, clients: int, requests: int, image: Path) -> tuple[list[float], list[str]]:
    from gradio_client import Client, handle_file

    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client_loop(k: int) -> None:
        client = Client(url, verbose=False)
        for i in range(requests):
            tic = time.perf_counter()
            try:
                overlay, files, status = client.predict(handle_file(str(image)), "the man in a white suit",
                                                        str(weights), 0.5, api_name="/segment_image")
                if overlay is None or "✅" not in status:
                    raise RuntimeError(f"no mask: {status}")
                with lock:
                    latencies.append(time.perf_counter() - tic)
            except Exception as e:  # every failure is counted and reported, none stops the run
                with lock:
                    failures.append(f"client {k} request {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="model folder (default: runs/demo/model, else a tiny one)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=5, help="requests per client")
    parser.add_argument("--concurrency", type=int, default=1, help="the server's model calls at once")
    parser.add_argument("--write", action="store_true", help="write benchmarks/results/load_serve.md")
    args = parser.parse_args(argv)

    from vlalign import assets

    tmp = tempfile.TemporaryDirectory(prefix="vlalign-load-")
    demo = ROOT / "runs" / "demo" / "model"
    weights = Path(args.weights) if args.weights else demo if (demo / "config.json").is_file() else None
    weights = weights or tiny_model(Path(tmp.name))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = start_server(weights, port, args.concurrency)
    try:
        tic = time.perf_counter()
        latencies, failures = run_clients(f"http://127.0.0.1:{port}/", weights, args.clients, args.requests,
                                          assets.skimage_image("astronaut.png"))
        wall = time.perf_counter() - tic
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # a request still running in the server: do not leave it behind
            proc.kill()
            proc.wait()
        tmp.cleanup()
    total = args.clients * args.requests
    lat = np.array(latencies) if latencies else np.array([float("nan")])
    table = (f"| clients | requests | server concurrency | ok | failed | p50 s | p95 s | max s | requests/s |\n"
             f"|---|---|---|---|---|---|---|---|---|\n"
             f"| {args.clients} | {total} | {args.concurrency} | {len(latencies)} | {len(failures)} | "
             f"{np.percentile(lat, 50):.3f} | {np.percentile(lat, 95):.3f} | {lat.max():.3f} | "
             f"{len(latencies) / wall:.2f} |")
    for f in failures[:10]:
        print("FAILED", f)
    model = weights if args.weights or weights == demo else "tiny random alignformer_lite 64x64"
    publish(f"# Load test of `vlalign serve`\n\n"
            f"Model folder: `{model}`; each request uploads the 512x512 astronaut photo with one expression through "
            f"gradio's queue on 127.0.0.1. Latency = from sending the request to receiving the overlay, as a client "
            f"sees it (queue wait included). The {os.cpu_count()} CPU cores are shared by the server and its "
            f"clients.\n\n{table}\n\n" + footer("load_serve.py", argv), "load_serve.md", args.write)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
