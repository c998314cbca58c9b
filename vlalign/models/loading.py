"""Safe, strict state-dict loading with named, explained exceptions.

Two rules hold everywhere in vlalign:
- Reading is safe: safetensors first, otherwise `torch.load(..., weights_only=True)`; there is no unsafe
  fallback, so a pickle that needs arbitrary code (a whole pickled model, custom objects) is refused.
- Loading is strict: every key the model has must be in the checkpoint and vice versa, with equal shapes,
  except keys matched by an explicit `tolerated` table that says *why* each difference is allowed. A
  checkpoint of a different architecture fails loudly instead of leaving a half-initialised model.
"""

from __future__ import annotations

import pickle
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "CheckpointError",
    "NotACheckpoint",
    "CheckpointMismatch",
    "LoadReport",
    "read_state_dict",
    "unwrap_state_dict",
    "load_strict",
    "tolerance_reason",
]

# Keys under which training scripts commonly nest the weights, tried in this order.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")
_SHOW = 8  # how many keys an error message lists per category before "... and N more"


class CheckpointError(ValueError):
    """Base class of the errors below; a ValueError so callers validating user input can catch one type."""


class NotACheckpoint(CheckpointError):
    """The file cannot be read as a state dict (not a checkpoint, or one that needs unsafe unpickling)."""


class CheckpointMismatch(CheckpointError):
    """The state dict does not fit the model: missing/unexpected keys not tolerated, or shapes that differ."""


@dataclass
class LoadReport:
    """What `load_strict` did: how many tensors it copied and which differences it let through, and why."""

    source: str
    loaded: int
    tolerated_missing: dict[str, str] = field(default_factory=dict)  # key -> reason
    tolerated_unexpected: dict[str, str] = field(default_factory=dict)  # key -> reason

    def __str__(self) -> str:
        lines = [f"loaded {self.loaded} tensors from {self.source}"]
        for title, keys in (("missing", self.tolerated_missing), ("unused", self.tolerated_unexpected)):
            by_reason: dict[str, int] = {}
            for reason in keys.values():
                by_reason[reason] = by_reason.get(reason, 0) + 1
            lines += [f"  {n} {title} key(s) tolerated: {reason}" for reason, n in by_reason.items()]
        return "\n".join(lines)


def _is_safetensors(path: Path) -> bool:
    """True for a `.safetensors` name, or for the format's magic: u64 header length, then a JSON object."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 8 + n <= path.stat().st_size


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a checkpoint file into a flat `{name: tensor}` dict on the CPU, unwrapping common containers."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if _is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except SafetensorError as e:
            raise NotACheckpoint(f"{path}: looks like safetensors but cannot be read ({e})") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):  # garbage bytes also surface as UnpicklingError
            raise NotACheckpoint(f"{path}: not a safetensors or torch checkpoint file ({e})") from e
        # weights_only refuses anything but tensors and plain containers; we never retry unsafely.
        detail = re.search(r"WeightsUnpickler error: ([^\n]*?\.)", str(e))
        raise NotACheckpoint(
            f"{path}: refused by torch.load(weights_only=True); it is not a plain state dict (a pickled "
            f"nn.Module or custom objects?). Re-save it with torch.save(model.state_dict(), ...) or as "
            f"safetensors. Detail: {detail.group(1) if detail else 'weights-only unpickling failed'}"
        ) from e
    except Exception as e:  # torch.load raises KeyError, RuntimeError, EOFError... on arbitrary bytes
        kind = type(e).__name__
        raise NotACheckpoint(f"{path}: not a safetensors or torch checkpoint ({kind}: {e})") from e
    return unwrap_state_dict(obj, source=str(path))


def unwrap_state_dict(obj: object, *, source: str = "<object>") -> dict[str, Tensor]:
    """The `{name: tensor}` mapping inside `obj` ({"model": ...}, {"state_dict": ...}, "module." prefixes)."""
    while isinstance(obj, Mapping) and not _all_tensors(obj):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            kinds = {k: type(v).__name__ for k, v in list(obj.items())[:_SHOW]}
            raise NotACheckpoint(
                f"{source}: no state dict found; top-level entries are {kinds} and none of "
                f"{list(_WRAPPER_KEYS)} holds a mapping of tensors"
            )
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise NotACheckpoint(f"{source}: expected a mapping of tensors, got {type(obj).__name__} "
                             f"{'(empty)' if isinstance(obj, Mapping) else ''}".rstrip())
    sd = dict(obj)
    # DistributedDataParallel / DataParallel save every key under "module."
    while sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _all_tensors(m: Mapping) -> bool:
    return bool(m) and all(isinstance(v, Tensor) for v in m.values())


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f", ... and {len(keys) - _SHOW} more" if len(keys) > _SHOW else "")


def tolerance_reason(key: str, tolerated: Mapping[str, str] | None) -> str | None:
    """The reason of the first `tolerated` pattern (regex -> reason) that matches `key` entirely, else None."""
    return next((reason for pattern, reason in (tolerated or {}).items() if re.fullmatch(pattern, key)), None)


def load_strict(
    module: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    tolerated: Mapping[str, str] | None = None,
    source: str = "<state dict>",
) -> LoadReport:
    """Copy `state_dict` into `module`, failing on any difference that `tolerated` does not explain.

    tolerated: regex pattern -> reason. A pattern must match a key *entirely* (`re.fullmatch`) to excuse it
        being missing from the checkpoint (the module keeps its own initial value) or unused by the module.
        Shape mismatches are never tolerated: remap or interpolate those before calling (see swin.py).
    source: the file name, used in every message.
    """
    def reason_for(key: str) -> str | None:
        return tolerance_reason(key, tolerated)

    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k} (checkpoint {tuple(state_dict[k].shape)}, model {tuple(own[k].shape)})"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    bad_missing = [k for k in missing if reason_for(k) is None]
    bad_unexpected = [k for k in unexpected if reason_for(k) is None]

    if bad_missing or bad_unexpected or mismatched:
        n_match = len(own) - len(missing) - len(mismatched)
        lines = [f"checkpoint {source} does not fit {type(module).__name__}: "
                 f"{n_match}/{len(own)} of the model's tensors match"]
        if n_match < 0.5 * len(own):
            lines.append("  most keys do not match: this looks like a checkpoint of a different architecture "
                         "(or the wrong variant/size); check the file and the model builder")
        if bad_missing:
            lines.append(f"  missing from the checkpoint ({len(bad_missing)}): {_listing(bad_missing)}")
        if bad_unexpected:
            lines.append(f"  unexpected in the checkpoint ({len(bad_unexpected)}): "
                         f"{_listing(bad_unexpected)}")
        if mismatched:
            lines.append(f"  shape mismatch ({len(mismatched)}): {_listing(mismatched)}")
        raise CheckpointMismatch("\n".join(lines))

    usable = {k: v for k, v in state_dict.items() if k in own}
    result = module.load_state_dict(usable, strict=False)
    # Everything still missing was checked above; anything else would be a bug in this function.
    assert set(result.missing_keys) == set(missing) and not result.unexpected_keys, result
    return LoadReport(
        source=source,
        loaded=len(usable),
        tolerated_missing={k: reason_for(k) or "" for k in missing},
        tolerated_unexpected={k: reason_for(k) or "" for k in unexpected},
    )
