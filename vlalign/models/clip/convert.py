"""Reading CLIP checkpoints from local files: OpenAI, open_clip and Hugging Face `CLIPModel`, into our CLIP.

    model = load_clip("ViT-B-16.pt", image_size=(288, 144))   # person crops: 18x9 patch grid
    model = load_clip("hf-clip-vit-base-patch16/")             # a Hugging Face folder
    model = build_clip(state_dict)                             # any OpenAI-keyed state dict in memory

Sources and what happens to them:
- OpenAI's released files (`ViT-B-16.pt`, `RN50.pt`, ...) are TorchScript archives. `torch.load(weights_only=True)`
  refuses them, and `torch.jit.load` compiles the archive's code and runs any TorchScript `__setstate__` it
  defines. `read_torchscript_state_dict` runs neither. It unpickles `data.pkl` with an unpickler that allows
  only tensor rebuilding and plain containers; every TorchScript object becomes an inert attribute holder;
  the tensors are read from the archive's `data/` entries.
- Plain state dicts (OpenAI keys; open_clip checkpoints, possibly under `state_dict` with `module.` prefixes):
  `read_state_dict` (safetensors, or `torch.load(weights_only=True)`).
- Hugging Face folders (`config.json` + `model.safetensors` or `pytorch_model.bin`): `hf_to_openai` renames
  the keys and joins the q/k/v projections into `in_proj`. The projections are stored transposed in HF
  (Linear weights) and are transposed back. Heads and the activation are read from `config.json`.

The architecture is inferred from tensor shapes as OpenAI's `build_model` does (ViT if `visual.proj` exists,
ModifiedResNet if `visual.attnpool.*`). Heads are width / 64 for OpenAI/open_clip files (`head_width`).
open_clip models trained with nn.GELU (most LAION ViTs, unlike the "-quickgelu" ones) need `activation="gelu"`:
the state dict cannot tell.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from vlalign.models.clip.model import CLIP, ClipConfig, patch_grid
from vlalign.models.loading import NotACheckpoint, load_strict, read_state_dict

__all__ = ["build_clip", "load_clip", "infer_clip_config", "hf_to_openai", "read_torchscript_state_dict",
           "resize_pos_embed", "CLIP_TOLERATED"]

# Keys a checkpoint may have that our CLIP does not, and why that is fine.
CLIP_TOLERATED = {
    r"input_resolution|context_length|vocab_size": "scalars kept in OpenAI's TorchScript archives; the tensor "
                                                   "shapes imply them (OpenAI's own loader deletes them)",
    r"(visual\.)?transformer\.resblocks\.\d+\.attn_mask": "OpenAI's causal mask, a plain tensor attribute that a "
                                                       "TorchScript archive may keep; ours is built per call",
    r"visual\..*\.num_batches_tracked": "BatchNorm step counter, absent from some checkpoints; used only in "
                                        "training without momentum, which CLIP's BatchNorms do not do",
}

_HF_LAYER = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
_HF_TOP = {
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",  # sic: HF's spelling
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "logit_scale": "logit_scale",
}
_HF_ACT = {"quick_gelu": "quick_gelu", "gelu": "gelu"}


# ---------------------------------------------------------------------------------------------------- readers
class _ScriptObject:
    """Stands in for an instance of a TorchScript class: it keeps the pickled attributes and runs no code."""

    def __init__(self, *args):
        self.state: object = None

    def __setstate__(self, state: object) -> None:
        self.state = state


_STORAGE_DTYPES = {"HalfStorage": torch.float16, "FloatStorage": torch.float32, "DoubleStorage": torch.float64,
                   "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
                   "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
                   "BoolStorage": torch.bool}


def _rebuild_tensor(storage: Tensor, offset: int, size: tuple, stride: tuple, *_unused) -> Tensor:
    return torch.as_strided(storage, size, stride, offset)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a TorchScript `data.pkl`: tensors, containers, inert stand-ins for TorchScript objects."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, source: str):
        super().__init__(file)
        self.archive, self.prefix, self.source = archive, prefix, source

    def find_class(self, module: str, name: str):
        if module == "__torch__" or module.startswith("__torch__."):
            return _ScriptObject
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch.jit._pickle" and name == "restore_type_tag":
            return lambda value, _type: value
        if module == "torch.jit._pickle" and name.startswith("build_") and name.endswith("list"):
            return list
        raise NotACheckpoint(f"{self.source}: the TorchScript archive refers to {module}.{name}, which the safe "
                             f"reader does not allow (only tensors and module attributes are read)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise NotACheckpoint(f"{self.source}: unexpected persistent id {pid!r} in the TorchScript archive")
        _, dtype, key, _location, numel = pid
        raw = bytearray(self.archive.read(f"{self.prefix}/data/{key}"))
        flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        if flat.numel() != numel:
            raise NotACheckpoint(f"{self.source}: storage {key} holds {flat.numel()} values, expected {numel}")
        return flat


def is_torchscript_archive(path: Path) -> bool:
    """A zip whose top folder holds `data.pkl` and `code/` (what `torch.jit.save` writes)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(re.fullmatch(r"[^/]+/code/.*", n) for n in z.namelist())


def read_torchscript_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Every tensor attribute of a TorchScript archive's module tree as `{dotted.name: tensor}`, without
    executing any code (see the module docstring). For a traced module these are its parameters and buffers."""
    path = Path(path)
    with zipfile.ZipFile(path) as z:
        pkl = [n for n in z.namelist() if re.fullmatch(r"[^/]+/data\.pkl", n)]
        if len(pkl) != 1:
            raise NotACheckpoint(f"{path}: expected one <name>/data.pkl in the TorchScript archive, found {pkl}")
        prefix = pkl[0].split("/")[0]
        order = f"{prefix}/byteorder"
        if order in z.namelist() and z.read(order).decode().strip() != "little":
            raise NotACheckpoint(f"{path}: big-endian TorchScript archives are not supported")
        with z.open(pkl[0]) as f:
            root = _RestrictedUnpickler(f, z, prefix, str(path)).load()
    out: dict[str, Tensor] = {}

    def walk(obj: object, name: str) -> None:
        if isinstance(obj, Tensor):
            out[name] = obj
        elif isinstance(obj, _ScriptObject) and isinstance(obj.state, Mapping):
            for key, value in obj.state.items():
                walk(value, f"{name}.{key}" if name else str(key))

    walk(root, "")
    if not out:
        raise NotACheckpoint(f"{path}: the TorchScript archive holds no tensors")
    return out


def _read_hf_folder(folder: Path) -> tuple[dict[str, Tensor], dict]:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise NotACheckpoint(f"{folder}: a folder must be a Hugging Face CLIPModel (config.json + "
                             f"model.safetensors or pytorch_model.bin); config.json is missing")
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return read_state_dict(folder / name), json.loads(config_path.read_text())
    sharded = [p.name for p in folder.glob("*.index.json")]
    raise NotACheckpoint(f"{folder}: expected model.safetensors or pytorch_model.bin next to config.json"
                         + (f" (sharded checkpoints {sharded} are not supported)" if sharded else ""))


# ------------------------------------------------------------------------------------------ HF -> OpenAI keys
def hf_to_openai(state_dict: Mapping[str, Tensor], config: Mapping, source: str = "<HF checkpoint>"
                 ) -> tuple[dict[str, Tensor], dict]:
    """A Hugging Face CLIPModel state dict + its config.json dict -> (OpenAI-keyed state dict,
    {"vision_heads", "text_heads", "activation"}: what shapes cannot tell)."""
    if config.get("model_type") != "clip":
        raise NotACheckpoint(f"{source}: config.json has model_type {config.get('model_type')!r}, expected 'clip' "
                             f"(a CLIPModel checkpoint)")
    tc, vc = config.get("text_config") or {}, config.get("vision_config") or {}
    acts = {tc.get("hidden_act", "quick_gelu"), vc.get("hidden_act", "quick_gelu")}
    eps = {tc.get("layer_norm_eps", 1e-5), vc.get("layer_norm_eps", 1e-5)}
    if len(acts) != 1 or not acts <= set(_HF_ACT) or eps != {1e-5}:
        raise NotACheckpoint(f"{source}: config.json asks for activation {sorted(acts)} and layer_norm_eps "
                             f"{sorted(eps)}; supported: one of {sorted(_HF_ACT)} for both towers, eps 1e-05")
    out: dict[str, Tensor] = {}
    qkv: dict[str, dict[str, Tensor]] = {}
    for key, value in state_dict.items():
        if key.endswith("embeddings.position_ids"):
            continue  # an index buffer older HF versions saved; not a weight
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
        elif key in ("visual_projection.weight", "text_projection.weight"):
            # HF: Linear weight (D, W); OpenAI: a (W, D) matrix applied as x @ proj.
            out["visual.proj" if key.startswith("visual") else "text_projection"] = value.t().contiguous()
        elif m := re.fullmatch(r"(vision|text)_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key):
            tower, idx, part, kind = m.groups()
            base = f"{'visual.' if tower == 'vision' else ''}transformer.resblocks.{idx}"
            if part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault(f"{base}.attn.in_proj_{kind}", {})[part[-6]] = value
            elif part in _HF_LAYER:
                out[f"{base}.{_HF_LAYER[part]}.{kind}"] = value
            else:
                out[key] = value  # left as is: the strict load names it as unexpected
        else:
            out[key] = value
    for key, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise NotACheckpoint(f"{source}: {key} needs q_proj, k_proj and v_proj; found only {sorted(parts)}")
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    extra = {"vision_heads": vc.get("num_attention_heads", 12), "text_heads": tc.get("num_attention_heads", 8),
             "activation": _HF_ACT[acts.pop()]}
    return out, extra


# --------------------------------------------------------------------------------------- architecture, resize
def _count(state_dict: Mapping[str, Tensor], pattern: str) -> int:
    return len({m.group(1) for k in state_dict if (m := re.match(pattern, k))})


def _native_grid(num_positions: int, source: str, what: str, target: tuple[int, int] | None) -> tuple[int, int]:
    """The (rows, cols) grid of a positional embedding with `num_positions` rows (class/mean token first)."""
    n = num_positions - 1
    side = math.isqrt(n)
    if side * side == n:
        return side, side
    if target is not None and target[0] * target[1] == n:
        return target
    raise NotACheckpoint(f"{source}: {what} has {n} grid positions, not a square; pass the image_size it was "
                         f"trained for (a grid of {n} patches)")


def infer_clip_config(state_dict: Mapping[str, Tensor], *, image_size: tuple[int, int] | int | None = None,
                      stride_size: int | None = None, resnet_last_stride: int = 2, head_width: int = 64,
                      activation: str = "quick_gelu", source: str = "<state dict>", **known) -> ClipConfig:
    """The ClipConfig of an OpenAI-keyed state dict (OpenAI's `build_model` rules), for `image_size` (default:
    the checkpoint's own). `known` overrides inferred fields (e.g. heads read from a HF config)."""
    required = ("token_embedding.weight", "positional_embedding", "text_projection", "ln_final.weight")
    missing = [k for k in required if k not in state_dict]
    vit = "visual.proj" in state_dict and "visual.conv1.weight" in state_dict
    resnet = "visual.attnpool.positional_embedding" in state_dict
    if missing or not (vit or resnet):
        keys = list(state_dict)[:6]
        raise NotACheckpoint(f"{source}: not a CLIP checkpoint. Expected OpenAI/open_clip keys ({', '.join(required)},"
                             f" and visual.proj + visual.conv1.weight (ViT) or visual.attnpool.* (ResNet)) or a "
                             f"Hugging Face CLIPModel folder; the file's first keys are {keys}")
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    sd = state_dict
    text_width = sd["ln_final.weight"].shape[0]
    cfg = dict(embed_dim=sd["text_projection"].shape[1], context_length=sd["positional_embedding"].shape[0],
               vocab_size=sd["token_embedding.weight"].shape[0], text_width=text_width,
               text_heads=text_width // head_width, text_layers=_count(sd, r"transformer\.resblocks\.(\d+)\."),
               text_mlp=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0], activation=activation)
    if vit:
        width, _, patch, _ = sd["visual.conv1.weight"].shape
        stride = stride_size or patch
        target = patch_grid(image_size, patch, stride) if image_size else None
        grid = _native_grid(sd["visual.positional_embedding"].shape[0], source, "visual.positional_embedding",
                            target)
        cfg.update(vision_layers=_count(sd, r"visual\.transformer\.resblocks\.(\d+)\."), vision_width=width,
                   vision_heads=width // head_width, patch_size=patch, stride_size=stride_size,
                   vision_mlp=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                   # default size: the checkpoint's, whose grid was made without overlap (patch = stride)
                   image_size=image_size or (grid[0] * patch, grid[1] * patch))
    else:
        width = sd["visual.layer1.0.conv1.weight"].shape[0]
        step = 16 * resnet_last_stride
        target = (image_size[0] // step, image_size[1] // step) if image_size else None
        grid = _native_grid(sd["visual.attnpool.positional_embedding"].shape[0], source,
                            "visual.attnpool.positional_embedding", target)
        cfg.update(vision_layers=tuple(_count(sd, rf"visual\.layer{i}\.(\d+)\.") for i in range(1, 5)),
                   vision_width=width, vision_heads=width * 32 // head_width, resnet_last_stride=resnet_last_stride,
                   # default size: the checkpoint's, at OpenAI's output stride 32
                   image_size=image_size or (grid[0] * 32, grid[1] * 32))
    cfg.update(known)
    return ClipConfig(**cfg)


def resize_pos_embed(pos: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> Tensor:
    """(1 + h*w, C) -> (1 + H*W, C): the grid part resized bicubically, the first (class/mean) row kept."""
    first, grid = pos[:1], pos[1:]
    if grid.shape[0] != old_grid[0] * old_grid[1]:
        raise ValueError(f"positional embedding has {grid.shape[0]} grid rows, not {old_grid[0]}x{old_grid[1]}")
    dtype = pos.dtype
    grid = grid.float().reshape(1, *old_grid, -1).permute(0, 3, 1, 2)  # (1, C, h, w)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False)
    return torch.cat([first, grid.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], -1).to(dtype)])


def _fit_positions(state_dict: dict[str, Tensor], model: CLIP, source: str) -> dict[str, Tensor]:
    """Resize the image tower's positional embedding in `state_dict` to the grid of `model`."""
    key = "visual.attnpool.positional_embedding" if model.config.is_resnet else "visual.positional_embedding"
    new_grid = model.visual.attnpool.grid if model.config.is_resnet else model.visual.grid
    pos = state_dict[key]
    if pos.shape[0] != 1 + new_grid[0] * new_grid[1]:
        old_grid = _native_grid(pos.shape[0], source, key, None)
        state_dict = {**state_dict, key: resize_pos_embed(pos, old_grid, new_grid)}
    return state_dict


# --------------------------------------------------------------------------------------------- entry points
def build_clip(state_dict: Mapping[str, Tensor], *, image_size: tuple[int, int] | int | None = None,
               stride_size: int | None = None, resnet_last_stride: int = 2, head_width: int = 64,
               activation: str = "quick_gelu", source: str = "<state dict>", **known) -> CLIP:
    """A CLIP built for the architecture of an OpenAI-keyed `state_dict` and loaded from it strictly.

    image_size: (H, W) of the inputs, e.g. (288, 144) for person crops; the image tower's positional
        embedding is resized to the new grid (bicubic, class token kept). None keeps the checkpoint's size,
        read from its square grid as OpenAI trained it (patch size x grid; 32 x grid for a ResNet); a
        checkpoint with a non-square grid (fine-tuned on crops) needs its image_size.
    stride_size: ViT patch stride (< patch size: overlapping patches, positions resized accordingly).
    resnet_last_stride: 1 keeps the ResNet's layer4 at stride 16 (CLIP-ReID's RN50).
    """
    state_dict = dict(state_dict)
    config = infer_clip_config(state_dict, image_size=image_size, stride_size=stride_size,
                               resnet_last_stride=resnet_last_stride, head_width=head_width, activation=activation,
                               source=source, **known)
    model = CLIP(config)
    load_strict(model, _fit_positions(state_dict, model, source), tolerated=CLIP_TOLERATED, source=source)
    return model.eval()


def load_clip(path: str | Path, image_size: tuple[int, int] | int | None = None, *, stride_size: int | None = None,
              resnet_last_stride: int = 2, activation: str | None = None, head_width: int = 64) -> CLIP:
    """A CLIP from a local OpenAI (.pt TorchScript or state dict), open_clip or Hugging Face checkpoint.

    path: a file (TorchScript archive, safetensors, or torch state dict, possibly wrapped in `state_dict`
        with `module.` prefixes), or a Hugging Face CLIPModel folder.
    activation: None = quick_gelu, or the config's for HF folders; "gelu" for open_clip's GELU models.
    head_width: width of one attention head for files without a config (64 in every OpenAI/open_clip model).
    Other arguments as in `build_clip`. Raises `NotACheckpoint` for a file that is not CLIP.
    """
    path = Path(path)
    known: dict = {}
    if path.is_dir():
        hf_sd, hf_config = _read_hf_folder(path)
        state_dict, known = hf_to_openai(hf_sd, hf_config, source=str(path))
    elif not path.is_file():
        raise FileNotFoundError(f"CLIP checkpoint not found: {path}")
    elif is_torchscript_archive(path):
        state_dict = read_torchscript_state_dict(path)
    else:
        state_dict = read_state_dict(path)
    if activation is not None:
        known["activation"] = activation
    return build_clip(state_dict, image_size=image_size, stride_size=stride_size,
                      resnet_last_stride=resnet_last_stride, head_width=head_width, source=str(path), **known)
