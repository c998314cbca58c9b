"""Model cards and the Hugging Face Hub conventions for vlalign model folders.

A model folder (`vlalign.models.pretrained.save_pretrained`) is laid out like a Hub model repository:

    config.json          {"architecture", "vlalign_version", "config", "card"}: how to rebuild the model
    model.safetensors    every tensor (loaded strictly)
    text/                tokenizer + text-encoder config (no weights: they are in model.safetensors)
    README.md            the model card: YAML metadata (library_name, tags, pipeline_tag, datasets, metrics)
                         then model, data, protocol, metrics and how to load it

Sharing:

    push_to_hub("runs/demo/model", "user/vlalign-demo")            # needs `hf auth login` or HF_TOKEN
    model = from_pretrained("user/vlalign-demo")                     # vlalign.models.pretrained

`from_pretrained` takes a local folder first; only a string that is not an existing folder and looks like a
Hub id (`user/name`, optionally `user/name@revision`) is resolved through `huggingface_hub.snapshot_download`.
With `HF_HUB_OFFLINE=1` only the local Hub cache is read, and a miss says so. The library never downloads
anything unless it is handed a Hub id. Note that building a text encoder sets `HF_HUB_OFFLINE=1` for the rest
of the process (vlalign.models.text), so resolve Hub ids before building models, as `from_pretrained` does.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["HUB_ID", "MODEL_FILES", "hub_offline", "resolve_model_dir", "write_model_card", "update_model_card",
           "push_to_hub"]

# "user/name" or "org/name" with the Hub's allowed characters, optionally "@revision".
HUB_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?")
# What a model folder needs; everything else (checkpoints, logs) stays out of downloads and uploads.
MODEL_FILES = ["config.json", "model.safetensors", "text/*", "README.md"]
CARD_NAME = "README.md"

# architecture prefix -> (task words for the card, Hub pipeline tag, tags)
_TASKS = {
    "alignformer": ("referring image segmentation", "image-segmentation", ["referring-image-segmentation"]),
    "efn": ("referring image segmentation", "image-segmentation", ["referring-image-segmentation"]),
    "twostream": ("referring video object segmentation", "video-classification", ["referring-video-segmentation"]),
    "clip4vi": ("visible-infrared person re-identification", "image-feature-extraction", ["person-reid"]),
}


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or the older TRANSFORMERS_OFFLINE) is set to a true value."""
    values = (os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(v.strip().lower() in ("1", "true", "yes", "on") for v in values)


def resolve_model_dir(path_or_id: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                      token: str | None = None) -> Path:
    """A local model folder, or the snapshot folder of a Hub id (downloaded, or read from the cache offline).

    Raises FileNotFoundError when `path_or_id` is neither an existing folder nor a reachable Hub id.
    """
    path = Path(path_or_id)
    if path.is_dir():
        return path
    text = str(path_or_id)
    match = HUB_ID.fullmatch(text)
    if match is None or text.startswith((".", "/", "~")) or os.sep + os.sep in text:
        raise FileNotFoundError(f"{text}: no such model folder (and not a Hub id of the form user/name)")
    repo_id, revision = match["repo"], match["revision"]
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - a core dependency of transformers
        raise FileNotFoundError(f"{text}: no such folder, and huggingface_hub is not installed to resolve it "
                                f"as a Hub id") from e
    offline = hub_offline()
    try:
        snapshot = snapshot_download(repo_id, revision=revision, allow_patterns=MODEL_FILES, cache_dir=cache_dir,
                                     token=token, local_files_only=offline)
    except Exception as e:  # the Hub's errors differ by version (offline, not cached, 404, network): one message
        how = ("HF_HUB_OFFLINE is set and it is not in the local Hub cache" if offline
               else f"downloading it failed ({type(e).__name__}: {e})")
        raise FileNotFoundError(
            f"{text}: not a local folder, and as a Hub model {how}. On a machine with network access run "
            f"`hf download {repo_id} --local-dir DIR` and pass DIR instead") from e
    return Path(snapshot)


# ---------------------------------------------------------------------------------------------- model cards
def _task(architecture: str) -> tuple[str, str, list[str]]:
    for prefix, task in _TASKS.items():
        if architecture.startswith(prefix):
            return task
    return ("vision-language model", "image-segmentation", [])


def _yaml_list(values: list[str]) -> str:
    return "".join(f"\n- {json.dumps(v)}" for v in values) if values else " []"


def _metric_rows(metrics: dict[str, Any]) -> list[str]:
    """{split: {metric: value}} -> markdown rows (fractions shown as percent, counts as integers)."""
    splits = {s: m for s, m in metrics.items() if isinstance(m, dict)}
    if not splits:
        return []
    names = [k for k, v in next(iter(splits.values())).items() if isinstance(v, int | float)]
    rows = ["| split | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for split, m in splits.items():
        cells = []
        for k in names:
            v = m.get(k)
            cells.append("" if v is None else f"{v}" if isinstance(v, int) else f"{100 * v:.2f}"
                         if 0 <= v <= 1 and not k.startswith(("num", "n_")) else f"{v:.4g}")
        rows.append(f"| {split} | " + " | ".join(cells) + " |")
    return rows


def render_model_card(meta: dict[str, Any], repo_id: str | None = None) -> str:
    """The README.md text for a model folder's config.json content `meta` (with its optional "card" info)."""
    arch = meta["architecture"]
    config = meta.get("config", {})
    card = meta.get("card", {}) or {}
    task, pipeline, tags = _task(arch)
    datasets = [card["dataset"]] if card.get("dataset") else []
    front = (f"---\nlibrary_name: vlalign\npipeline_tag: {pipeline}\ntags:{_yaml_list(['vlalign', arch, *tags])}"
             f"\ndatasets:{_yaml_list(datasets)}\n")
    if card.get("license"):
        front += f"license: {card['license']}\n"
    front += "---\n"
    name = repo_id or "PATH"
    lines = [front, f"# {arch}", "", f"A vlalign model for {task}, written by vlalign "
             f"{meta.get('vlalign_version', '?')}.", "", "## Model", ""]
    for key in ("backbone", "text_encoder", "text_dir", "input_size", "max_tokens", "num_frames", "embed_dim"):
        if key in config and config[key] is not None:
            value = Path(config[key]).name if key == "text_dir" else config[key]
            lines.append(f"- `{key}`: {value}")
    if card.get("parameters"):
        lines.append(f"- parameters: {card['parameters']:,}")
    lines.append("- full configuration: `config.json` (`config`), rebuilt by `from_pretrained`")
    lines += ["", "## Data", "", card.get("data", "Not recorded (the folder was not written by a vlalign training "
                                                  "command).")]
    if card.get("training"):
        lines += ["", "Training: " + ", ".join(f"{k} {v}" for k, v in card["training"].items())]
    lines += ["", "## Protocol", "", card.get("protocol", "Not recorded.")]
    lines += ["", "## Metrics", ""]
    rows = _metric_rows(card.get("metrics") or {})
    lines += rows or ["No evaluation recorded with this folder."]
    lines += ["", "## How to load", "", "```python", "from vlalign.models.pretrained import from_pretrained",
              f'model = from_pretrained("{name}")  # a local folder, or a Hub id user/name', "```", ""]
    if "image segmentation" in task:
        lines += ["```python", "from vlalign.predictor import ReferringSegmenter",
                  f'seg = ReferringSegmenter.from_pretrained("{name}")', 'seg.set_image("photo.jpg")',
                  'mask = seg.predict("the dog on the left")  # bool HxW at the photo\'s size', "```", "",
                  f'Command line: `vlalign predict --weights {name} photo.jpg "the dog on the left" --out mask.png`; '
                  f"web demo: `vlalign serve --weights {name}`; ONNX: `vlalign export onnx --weights {name} "
                  "--out model.onnx`.", ""]
    lines += ["Hub ids are downloaded with `huggingface_hub.snapshot_download` (the cache only when "
              "`HF_HUB_OFFLINE=1`); weights are read from safetensors and loaded strictly.", ""]
    return "\n".join(lines)


def _read_meta(path: Path) -> dict[str, Any]:
    from vlalign.models.pretrained import read_config

    return read_config(path)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_model_card(path: str | os.PathLike, repo_id: str | None = None) -> Path:
    """(Re)write `path`/README.md from the folder's config.json (and the "card" info stored in it)."""
    path = Path(path)
    card_path = path / CARD_NAME
    _write_atomic(card_path, render_model_card(_read_meta(path), repo_id))
    return card_path


def update_model_card(path: str | os.PathLike, **info: Any) -> Path:
    """Merge `info` (metrics, data, protocol, dataset, training, license) into config.json's "card" entry and
    rewrite README.md; e.g. `update_model_card(out / "model", metrics=results)` after evaluating."""
    path = Path(path)
    meta = _read_meta(path)
    meta["card"] = {**(meta.get("card") or {}), **info}
    _write_atomic(path / "config.json", json.dumps(meta, indent=2, default=str))
    return write_model_card(path)


def push_to_hub(path: str | os.PathLike, repo_id: str, *, private: bool = False, token: str | None = None,
                commit_message: str | None = None, api=None) -> str:
    """Upload a model folder to the Hub repository `repo_id` (created if missing); returns the commit URL.

    Uploads only the model files (MODEL_FILES), with a model card naming `repo_id`. `api` is an
    `huggingface_hub.HfApi` (default: a new one with `token`); the login comes from `hf auth login` or HF_TOKEN.
    """
    path = Path(path)
    if HUB_ID.fullmatch(repo_id) is None or "@" in repo_id:
        raise ValueError(f"repo_id must look like user/name, got {repo_id!r}")
    meta = _read_meta(path)  # refuses folders that are not model folders
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path / 'model.safetensors'} is missing: nothing to upload")
    _write_atomic(path / CARD_NAME, render_model_card(meta, repo_id))
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(path), repo_id=repo_id, repo_type="model",
                             allow_patterns=MODEL_FILES,
                             commit_message=commit_message or f"Upload {meta['architecture']} with vlalign")
    return str(getattr(info, "commit_url", info))
