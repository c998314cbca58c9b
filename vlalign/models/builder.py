"""The one rule every builder follows: family defaults < the variant's numbers < the caller's overrides."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["variant_config", "require_text_dir"]

C = TypeVar("C")


def variant_config(config_cls: type[C], name: str, overrides: dict[str, Any], variant: dict[str, Any],
                   family: str) -> C:
    """`config_cls(**{**variant, **overrides, "name": name})`, refusing unknown options and a foreign name."""
    if overrides.get("name", name) != name:
        raise ValueError(f"builder {name!r} cannot build a model named {overrides['name']!r}")
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = set(overrides) - fields
    if unknown:
        raise TypeError(f"unknown {family} option(s) {sorted(unknown)}; known: {sorted(fields)}")
    return config_cls(**{**variant, **overrides, "name": name})


def require_text_dir(config: Any, name: str, variant: dict[str, Any]) -> None:
    """Variants with BERT-base (the papers' text encoder) need a local `text_dir`: it cannot be downloaded here."""
    if config.text_dir is None and "text_dir" not in variant:
        raise ValueError(f"{name} uses BERT-base, which cannot be downloaded here: pass text_dir=<local "
                         f"bert-base-uncased folder> (config.json, vocab.txt, model.safetensors)")
