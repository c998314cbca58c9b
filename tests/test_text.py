"""HFTextEncoder: tiny random BERT folders loaded strictly, tokenisation rules, and the real MiniLM."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from vlalign import assets
from vlalign.models.loading import CheckpointMismatch
from vlalign.models.text import HFTextEncoder

transformers = pytest.importorskip("transformers")

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "man", "on", "left", "in", "a", "red", "shirt",
         "dog", "##s", "small", "white", "big"]


@pytest.fixture()
def tiny_bert(tmp_path):
    """A folder laid out like a BERT release: config.json, vocab.txt, model.safetensors (random weights)."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    model = transformers.BertModel(config).eval()
    config.save_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}  # includes pooler.* (tolerated)
    sd["embeddings.position_ids"] = torch.arange(64)[None]  # what older transformers versions saved
    save_file(sd, tmp_path / "model.safetensors")
    return tmp_path, model


def reference_features(model, encoder, texts):
    batch = encoder.tokenize(texts)
    with torch.no_grad():
        ours = encoder.eval()(batch["tokens"], batch["token_mask"])
        theirs = model(input_ids=batch["tokens"], attention_mask=batch["token_mask"].long()).last_hidden_state
    return batch, ours, theirs


def test_tiny_bert_folder_loads_strictly_and_matches_transformers(tiny_bert):
    path, model = tiny_bert
    encoder = HFTextEncoder.from_dir(path, pretrained=True)
    assert encoder.dim == 32 and encoder.model.pooler is None
    report = encoder.load_pretrained(path)
    assert set(report.tolerated_unexpected) == {"pooler.dense.weight", "pooler.dense.bias",
                                                "embeddings.position_ids"}
    assert not report.tolerated_missing
    texts = ["the man on the left in a red shirt", "small white dogs"]
    batch, ours, theirs = reference_features(model, encoder, texts)
    assert ours.shape == (2, 11, 32)
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert batch["tokens"][1].tolist()[:6] == [2, 15, 16, 13, 14, 3]  # [CLS] small white dog ##s [SEP]
    assert batch["token_mask"][1].tolist() == [True] * 6 + [False] * 5


def test_full_bert_checkpoint_with_legacy_names(tiny_bert, tmp_path_factory):
    """bert-base-uncased style: "bert." prefix, LayerNorm gamma/beta and masked-LM heads."""
    path, model = tiny_bert
    legacy = {}
    for k, v in model.state_dict().items():
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        legacy[f"bert.{k}"] = v.contiguous()
    legacy["cls.predictions.bias"] = torch.zeros(len(VOCAB))
    save_file(legacy, path / "model.safetensors")
    encoder = HFTextEncoder.from_dir(path, pretrained=True)
    _, ours, theirs = reference_features(model, encoder, ["a big red dog"])
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_wrong_checkpoint_is_refused(tiny_bert):
    path, model = tiny_bert
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if ".layer.1." not in k}
    save_file(sd, path / "model.safetensors")
    with pytest.raises(CheckpointMismatch, match=r"model\.safetensors(?s:.*)encoder\.layer\.1\."):
        HFTextEncoder.from_dir(path, pretrained=True)


def test_save_config_rebuilds_without_weights(tiny_bert, tmp_path_factory):
    path, _ = tiny_bert
    encoder = HFTextEncoder.from_dir(path, pretrained=True)
    saved = encoder.save_config(tmp_path_factory.mktemp("model") / "text")
    assert not (saved / "model.safetensors").exists() and (saved / "config.json").is_file()
    rebuilt = HFTextEncoder.from_dir(saved, pretrained=False)
    own, new = encoder.state_dict(), rebuilt.state_dict()
    assert {k: v.shape for k, v in own.items()} == {k: v.shape for k, v in new.items()}
    texts = ["the big dog on the left", "a man"]
    assert torch.equal(rebuilt.tokenize(texts)["tokens"], encoder.tokenize(texts)["tokens"])
    rebuilt.load_state_dict(own)  # what a vlalign model folder does with its main safetensors
    batch = encoder.tokenize(texts)
    assert torch.allclose(rebuilt.eval()(**batch), encoder.eval()(**batch))


def test_tokenize_truncates_and_refuses_empty_sentences(tiny_bert):
    encoder = HFTextEncoder.from_dir(tiny_bert[0], pretrained=False)
    batch = encoder.tokenize(["the red dog " * 20, "a man"])
    assert batch["tokens"].shape == (2, 20) and batch["tokens"].dtype == torch.long
    assert batch["token_mask"].dtype == torch.bool and batch["tokens"][0, -1].item() == 3  # ends with [SEP]
    for bad in ["", "   \t\n"]:
        with pytest.raises(ValueError, match=r"sentence 1 .*" + repr(bad).replace("\\", "\\\\")):
            encoder.tokenize(["a dog", bad])
    with pytest.raises(ValueError, match="sentence 0 has no tokens"):
        encoder.tokenize(["\u200b"])  # zero-width space: not whitespace to Python, but no tokens either
    with pytest.raises(TypeError):
        encoder.tokenize("a dog")


def test_every_parameter_gets_a_gradient(tiny_bert):
    encoder = HFTextEncoder.from_dir(tiny_bert[0], pretrained=True).train()
    batch = encoder.tokenize(["the man on the left", "a dog"])
    encoder(**batch).square().mean().backward()
    assert not [n for n, p in encoder.named_parameters() if p.grad is None]


def test_real_minilm_paraphrase_is_closer_than_an_unrelated_sentence():
    try:
        path = assets.minilm_dir()
    except assets.AssetMissing as e:
        pytest.skip(f"all-MiniLM-L6-v2 absent: {e}")
    encoder = HFTextEncoder.from_dir(path, pretrained=True).eval()
    assert encoder.dim == 384
    texts = ["man in red shirt on the left", "the guy on the left wearing a red shirt",
             "a bowl of soup on a wooden table"]
    batch = encoder.tokenize(texts)
    with torch.no_grad():
        features = encoder(**batch)
    mask = batch["token_mask"][..., None].float()
    pooled = torch.nn.functional.normalize((features * mask).sum(1) / mask.sum(1), dim=-1)  # mean pooling
    paraphrase, unrelated = (pooled[0] @ pooled[1]).item(), (pooled[0] @ pooled[2]).item()
    assert paraphrase > 0.6 and unrelated < 0.3
