"""HFTextEncoder: a `transformers` encoder (BERT family) built from a local folder, plus its tokenizer.

The network is always built from its config (`AutoConfig` -> `AutoModel.from_config`), never downloaded, so
it can be rebuilt without pretrained weights: a saved vlalign model keeps the text config and tokenizer in a
subfolder (`save_config`) and the text weights inside its own model.safetensors. Pretrained weights, when
asked for, are read from the same folder and loaded strictly (`load_strict`) with named exceptions.

Default folder: all-MiniLM-L6-v2 from the offline assets (6 layers, 384-d). AlignFormer's paper setting is
bert-base-uncased (768-d), which loads the same way from a local copy of its folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from vlalign import assets
from vlalign.models.loading import LoadReport, load_strict, read_state_dict

__all__ = ["HFTextEncoder", "HF_TEXT_TOLERATED"]

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

# Checkpoint keys the encoder does not use, and why.
HF_TEXT_TOLERATED: dict[str, str] = {
    r"pooler\..*": "the [CLS] pooler is dropped: the segmenters use per-token features only",
    r"embeddings\.position_ids": "constant buffer that older transformers versions saved; recomputed",
    r"embeddings\.token_type_ids": "constant buffer that some transformers versions saved; recomputed",
    r"cls\..*": "pre-training heads (masked LM / next sentence) of a full BERT checkpoint, unused",
}


def _transformers():
    """Import transformers lazily (it takes seconds) and never let it reach the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # defensive: every call below also passes local_files_only
    import transformers

    return transformers


class HFTextEncoder(nn.Module):
    """Sentences -> per-token features. `tokenize` then `forward(tokens, token_mask) -> (B, L, dim)`."""

    def __init__(self, model: nn.Module, tokenizer, max_tokens: int = 20):
        super().__init__()
        if getattr(model, "pooler", None) is not None:
            model.pooler = None  # unused (HF_TEXT_TOLERATED); kept, its parameters would never get a grad
        self.model = model
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        # How many tokens the tokenizer adds to every sentence ([CLS] and [SEP] for BERT).
        self._n_special = len(tokenizer("")["input_ids"])

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @classmethod
    def from_dir(cls, path: str | Path | None = None, pretrained: bool = True,
                 max_tokens: int = 20) -> HFTextEncoder:
        """Build from a folder holding config.json + tokenizer files (default: all-MiniLM-L6-v2).

        pretrained: also load model.safetensors (or pytorch_model.bin) from that folder, strictly.
        """
        path = assets.minilm_dir() if path is None else Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} holds no config.json: not a transformers model folder")
        tf = _transformers()
        config = tf.AutoConfig.from_pretrained(path, local_files_only=True)
        tokenizer = tf.AutoTokenizer.from_pretrained(path, local_files_only=True)
        encoder = cls(tf.AutoModel.from_config(config), tokenizer, max_tokens=max_tokens)
        if pretrained:
            encoder.load_pretrained(path)
        return encoder

    def load_pretrained(self, path: str | Path) -> LoadReport:
        """Load the weights file of a transformers folder (or a weights file itself) strictly."""
        path = Path(path)
        if path.is_dir():
            found = [path / name for name in WEIGHT_FILES if (path / name).is_file()]
            if not found:
                raise FileNotFoundError(f"{path} holds none of {WEIGHT_FILES} (sharded checkpoints are not "
                                        f"supported: merge them into one file)")
            path = found[0]
        state_dict = self._filter_checkpoint(read_state_dict(path))
        return load_strict(self.model, state_dict, tolerated=HF_TEXT_TOLERATED, source=str(path))

    def _filter_checkpoint(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Map full-model checkpoints (BertForPreTraining's "bert.*", legacy LayerNorm gamma/beta) to ours."""
        prefix = getattr(self.model, "base_model_prefix", "") + "."
        own = self.model.state_dict()
        out = {}
        for key, value in state_dict.items():
            if prefix != "." and key.startswith(prefix) and key not in own:
                key = key[len(prefix):]
            # TF-converted checkpoints (the original BERT release) name LayerNorm parameters gamma/beta.
            key = key.replace("LayerNorm.gamma", "LayerNorm.weight")
            key = key.replace("LayerNorm.beta", "LayerNorm.bias")
            out[key] = value
        return out

    def save_config(self, path: str | Path) -> Path:
        """Write config.json and the tokenizer files (no weights): enough for `from_dir(path, False)`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        return path

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        """list of B sentences -> {"tokens": (B, L) long, "token_mask": (B, L) bool}, L <= max_tokens.

        Padded to the longest sentence of the batch; longer sentences are truncated (keeping [SEP]).
        """
        if isinstance(texts, str):
            raise TypeError("tokenize expects a list of sentences, got one string")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"sentence {i} is empty or not a string: {text!r}")
        enc = self.tokenizer(list(texts), padding="longest", truncation=True, max_length=self.max_tokens,
                             return_tensors="pt")
        mask = enc["attention_mask"].bool()
        # e.g. only control or zero-width characters: nothing but the special tokens would remain
        for i in (mask.sum(1) <= self._n_special).nonzero().flatten().tolist():
            raise ValueError(f"sentence {i} has no tokens after tokenisation: {texts[i]!r}")
        return {"tokens": enc["input_ids"].long(), "token_mask": mask}

    def forward(self, tokens: Tensor, token_mask: Tensor) -> Tensor:
        """tokens (B, L) long, token_mask (B, L) bool (True = real token) -> (B, L, dim) last hidden state."""
        # token_type_ids left to the model's default (all zeros: one sentence per row)
        return self.model(input_ids=tokens, attention_mask=token_mask.long()).last_hidden_state

    # Per-layer access, for models that interleave the text layers with vision (the two-stream video model):
    # `hidden, mask = embed(tokens, token_mask)`, then `run_layers(hidden, mask, start, stop)` stage by stage;
    # running every layer gives `forward`'s output. BERT-family encoders only (`embeddings`, `encoder.layer`).
    @property
    def num_layers(self) -> int:
        return len(self._layers())

    def _layers(self) -> nn.ModuleList:
        layers = getattr(getattr(self.model, "encoder", None), "layer", None)
        if not isinstance(layers, nn.ModuleList) or not hasattr(self.model, "embeddings"):
            raise TypeError(f"{type(self.model).__name__} exposes no `embeddings` + `encoder.layer`: per-layer "
                            f"access needs a BERT-family encoder")
        return layers

    def embed(self, tokens: Tensor, token_mask: Tensor) -> tuple[Tensor, Tensor | None]:
        """tokens (B, L), token_mask (B, L) bool -> (hidden (B, L, dim) after the embeddings, the attention
        mask in the form the layers take; None when nothing is padded)."""
        self._layers()
        hidden = self.model.embeddings(input_ids=tokens)
        try:  # transformers >= 5
            from transformers.masking_utils import create_bidirectional_mask
        except ImportError:  # transformers 4.x: the additive (B, 1, 1, L) mask
            return hidden, self.model.get_extended_attention_mask(token_mask.long(), tokens.shape)
        mask = create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden,
                                         attention_mask=token_mask.long())
        return hidden, mask

    def run_layers(self, hidden: Tensor, layer_mask: Tensor | None, start: int, stop: int) -> Tensor:
        """Layers [start, stop) on hidden (B, L, dim) -> (B, L, dim); `layer_mask` from `embed`."""
        for layer in self._layers()[start:stop]:
            out = layer(hidden, layer_mask)
            hidden = out[0] if isinstance(out, tuple) else out  # transformers 4.x layers return tuples
        return hidden
