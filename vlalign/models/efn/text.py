"""EFN's language side: a sentence -> one sentence feature and per-stage word features.

    tokens -> text encoder -> words (B, L, Dw), sentence (B, Ds)
           -> LanguageHeads -> 3 x words (B, L, D) (one per fused stage, L2-normalised), sentence (B, D)

`GRUTextEncoder` (paper, release): word embeddings -> Linear+ReLU -> 1-layer Bi-GRU. The word features are
the embeddings *before* the GRU (release); the sentence feature comes from the GRU. The vocabulary is built
from the training expressions (`build_vocab`) and travels in the model's config; the embedding can start from
the offline GloVe 6B 50-d vectors (`glove_embeddings`). `HFSentenceEncoder` is the BERT-family alternative
(all-MiniLM-L6-v2 by default), built on `vlalign.models.text.HFTextEncoder`.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlalign import assets
from vlalign.models.text import HFTextEncoder

__all__ = ["PAD", "UNK", "split_words", "build_vocab", "glove_embeddings", "GRUTextEncoder",
           "HFSentenceEncoder", "LanguageHeads"]

PAD, UNK = "<pad>", "<unk>"  # indices 0 and 1 of every vocabulary
GLOVE_DIM = 50
_WORD = re.compile(r"\w+")


def split_words(text: str) -> list[str]:
    """Lower-cased runs of letters/digits: "The man's hat." -> ["the", "man", "s", "hat"] (GloVe's casing)."""
    return _WORD.findall(text.lower())


def build_vocab(texts: Iterable[str], min_count: int = 1) -> list[str]:
    """[PAD, UNK, words seen >= min_count times, most frequent first (ties alphabetical)]: deterministic, so
    every process of a distributed run builds the same list."""
    counts = Counter(w for text in texts for w in split_words(text))
    words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    return [PAD, UNK, *words]


def glove_embeddings(vocab: list[str], seed: int = 0) -> tuple[Tensor, int]:
    """(len(vocab), 50) initial embedding from GloVe 6B 50-d and how many words it covered.

    Words GloVe lacks get N(0, sigma) rows with sigma = GloVe's own standard deviation, so they start on the
    same scale; the padding row is zero. Raises `AssetMissing` when the vectors are not installed.
    """
    import pyarrow.parquet as pq  # optional dependency of the GloVe asset

    vectors_path, words_path = assets.glove_6b_50d()
    glove_words = pq.read_table(words_path).column(0).to_pylist()
    row = {w: i for i, w in enumerate(glove_words)}
    vectors = np.load(vectors_path, mmap_mode="r")  # 400k x 50: read only the rows we need
    found = [(i, row[w]) for i, w in enumerate(vocab) if w in row]
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(len(vocab), GLOVE_DIM, generator=g) * float(np.std(vectors[:10000]))
    if found:
        ours, theirs = zip(*found)
        weight[list(ours)] = torch.from_numpy(np.asarray(vectors[list(theirs)], dtype=np.float32))
    weight[0] = 0.0
    return weight, len(found)


class GRUTextEncoder(nn.Module):
    """`tokenize(texts)` then `forward(tokens, token_mask) -> (words (B, L, word_dim), sentence (B, 2*hidden))`.

    vocab: [PAD, UNK, ...] (see `build_vocab`), or None for an empty placeholder that `set_vocab` replaces
    (the model's `prepare(train_set)` does it from the training expressions); glove: start the embedding from
    GloVe (needs embed_dim == 50).
    """

    def __init__(self, vocab: list[str] | None, embed_dim: int = 512, word_dim: int = 512,
                 hidden_dim: int = 512, max_tokens: int = 20, glove: bool = False):
        super().__init__()
        self.embed_dim, self.max_tokens = embed_dim, max_tokens
        self.mlp = nn.Sequential(nn.Linear(embed_dim, word_dim), nn.ReLU())
        self.gru = nn.GRU(word_dim, hidden_dim, batch_first=True, bidirectional=True)
        self.word_dim, self.sentence_dim = word_dim, 2 * hidden_dim
        self.vocab: list[str] = []
        self.set_vocab(vocab, glove=glove)

    @property
    def has_vocab(self) -> bool:
        return len(self.vocab) > 2

    def set_vocab(self, vocab: list[str] | None, glove: bool = False) -> None:
        """Install a vocabulary and a fresh embedding for it (random, or GloVe where `glove`)."""
        vocab = [PAD, UNK] if vocab is None else list(vocab)
        if vocab[:2] != [PAD, UNK] or len(set(vocab)) != len(vocab):
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r} and has no duplicates; got "
                             f"{vocab[:5]}... ({len(vocab)} entries)")
        old = getattr(self, "embedding", None)
        embedding = nn.Embedding(len(vocab), self.embed_dim, padding_idx=0)
        if glove and len(vocab) > 2:
            if self.embed_dim != GLOVE_DIM:
                raise ValueError(f"GloVe vectors are {GLOVE_DIM}-d but embed_dim={self.embed_dim}")
            try:
                weight, found = glove_embeddings(vocab)
                embedding.weight.data.copy_(weight)
            except (assets.AssetMissing, ImportError) as e:
                warnings.warn(f"GRU word embeddings start from random vectors: {e}", stacklevel=2)
        if old is not None:
            embedding.to(old.weight.device, old.weight.dtype)
        self.embedding = embedding
        self.vocab = vocab
        self.index = {w: i for i, w in enumerate(vocab)}

    def save_config(self, path: str | Path) -> Path:
        """Write vocab.txt (one word per line) into `path`: a readable copy of the config's vocabulary."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "vocab.txt").write_text("\n".join(self.vocab) + "\n")
        return path

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        """list of B sentences -> {"tokens": (B, L) long, "token_mask": (B, L) bool}, L <= max_tokens.

        Unknown words map to UNK; sentences are cut at max_tokens words and padded to the longest.
        """
        if not self.has_vocab:
            raise RuntimeError("the GRU text encoder has no vocabulary yet: build it from the training "
                               "expressions with model.prepare(train_set) (train_refseg does) or pass vocab=[...]")
        if isinstance(texts, str):
            raise TypeError("tokenize expects a list of sentences, got one string")
        rows = []
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"sentence {i} is empty or not a string: {text!r}")
            words = split_words(text)[: self.max_tokens]
            if not words:
                raise ValueError(f"sentence {i} has no words after tokenisation: {text!r}")
            rows.append([self.index.get(w, 1) for w in words])
        length = max(len(r) for r in rows)
        tokens = torch.zeros(len(rows), length, dtype=torch.long)
        for i, r in enumerate(rows):
            tokens[i, : len(r)] = torch.tensor(r)
        return {"tokens": tokens, "token_mask": tokens != 0}

    def forward(self, tokens: Tensor, token_mask: Tensor) -> tuple[Tensor, Tensor]:
        """tokens (B, L), token_mask (B, L) bool, real tokens first -> (B, L, word_dim), (B, 2*hidden)."""
        words = self.mlp(self.embedding(tokens))  # release: the word features are these pre-GRU vectors
        lengths = token_mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(words, lengths, batch_first=True, enforce_sorted=False)
        _, h_n = self.gru(packed)  # (2, B, hidden): forward state after the last word, backward after the first
        return words, torch.cat([h_n[0], h_n[1]], dim=-1)


class HFSentenceEncoder(HFTextEncoder):
    """HFTextEncoder whose forward also returns a sentence feature: the masked mean of the token features."""

    @property
    def word_dim(self) -> int:
        return self.dim

    @property
    def sentence_dim(self) -> int:
        return self.dim

    def forward(self, tokens: Tensor, token_mask: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """-> words (B, L, dim), sentence (B, dim)."""
        words = super().forward(tokens, token_mask)
        weights = token_mask.to(words.dtype).unsqueeze(-1)
        return words, (words * weights).sum(1) / weights.sum(1).clamp(min=1)


def _linear_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, cout), nn.BatchNorm1d(cout), nn.ReLU())


class LanguageHeads(nn.Module):
    """Linear+BN+ReLU mappings of the release: a shared word mapping then one per fused stage, and one for
    the sentence; every output L2-normalised. BN sees real tokens only (ours: the release's statistics also
    counted padding). Training needs >= 2 sentences per process (BatchNorm1d over sentences)."""

    def __init__(self, word_dim: int, sentence_dim: int, dim: int, num_stages: int = 3):
        super().__init__()
        self.words = _linear_bn_relu(word_dim, dim)
        self.stages = nn.ModuleList(_linear_bn_relu(dim, dim) for _ in range(num_stages))
        self.sentence = _linear_bn_relu(sentence_dim, dim)

    def forward(self, words: Tensor, sentence: Tensor, token_mask: Tensor) -> tuple[list[Tensor], Tensor]:
        """words (B, L, Dw), sentence (B, Ds), token_mask (B, L) -> num_stages x (B, L, dim), (B, dim);
        padded positions are zero."""
        real = self.words(words[token_mask])  # (N_real, dim)
        stages = []
        for head in self.stages:
            stage = F.normalize(head(real), dim=-1)
            out = stage.new_zeros(*words.shape[:2], stage.shape[-1])
            out[token_mask] = stage
            stages.append(out)
        return stages, F.normalize(self.sentence(sentence), dim=-1)
