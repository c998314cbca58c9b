"""Fixtures shared by the model tests, and a loader for the scripts of benchmarks/."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

# Word pieces of every sentence the tests tokenize with the tiny BERT (others become [UNK]).
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "man", "on", "left", "in", "a", "red", "shirt",
         "dog", "small", "white", "big", "circle", "of", "square", "green", "star", "second", "from", "right"]


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory):
    """A tiny random BERT folder (config.json + vocab.txt, no weights: build with pretrained_text=False)."""
    transformers = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("tiny_bert")
    transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=32).save_pretrained(path)
    (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread (no fork/join per op) and leave the other cores alone."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def toy_batch(model, texts=("the man on the left", "a big white dog"), size: int = 64):
    """A fixed two-sentence batch at `size` x `size`: images, tokens, token mask and two box targets."""
    import torch

    tok = model.tokenize(list(texts))
    g = torch.Generator().manual_seed(1)
    image = torch.rand(len(texts), 3, size, size, generator=g)
    target = torch.zeros(len(texts), size, size)
    target[0, 8:44, 12:52] = 1
    target[1, 24:60, 4:36] = 1
    return image, tok["tokens"], tok["token_mask"], target


def load_benchmark(file_name: str):
    """A script of benchmarks/ as a module (they are not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / file_name
    spec = importlib.util.spec_from_file_location(file_name.removesuffix(".py"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
