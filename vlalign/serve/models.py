"""Which model folders the demo offers, and the loaded predictors (one per folder, loaded on first use).

Only folders named on the command line or found under the models root (default `runs/`) can be picked:
the browser never passes a path of its own, so a demo served beyond loopback cannot be made to read
arbitrary files of the server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# The folder `make demo` writes (vlalign/commands/demo.py: --out runs/demo, then OUT/model).
DEMO_WEIGHTS = Path("runs/demo/model")

# task -> architecture prefixes of the model folders that serve it
TASKS = {
    "image": ("alignformer", "efn"),
    "video": ("twostream",),
    "reid": ("clip4vi",),
}

HOW_TO_GET = {
    "image": "run `make demo` (about 10 minutes on a CPU; it writes the model folder `runs/demo/model`, which "
             "`vlalign serve` then picks up by itself), or train one with `vlalign train alignformer_lite --data "
             "DATA --out RUN` and start `vlalign serve --weights RUN/model`",
    "video": "train a referring video model, e.g. `vlalign synth ytvos OUT` then `vlalign rvos train "
             "twostream_lite --data OUT --out RUN` (see `vlalign rvos train --help`), and start `vlalign serve "
             "--weights RUN/model`",
    "reid": "train a re-identification model, e.g. `vlalign reid train clip4vireid_lite --data DATA --out RUN` "
            "(see `vlalign reid train --help`), and start `vlalign serve --weights RUN/model`",
}


def architecture(folder: Path) -> str | None:
    """The `architecture` field of a model folder's config.json (None if it is not a model folder)."""
    try:
        return json.loads((folder / "config.json").read_text()).get("architecture")
    except (OSError, ValueError, AttributeError):
        return None


def task_of(arch: str | None) -> str | None:
    for task, prefixes in TASKS.items():
        if arch and arch.startswith(prefixes):
            return task
    return None


def find_model_folders(weights: Iterable[str | Path], roots: Iterable[str | Path] = (), depth: int = 3
                       ) -> dict[str, list[str]]:
    """task -> model folders: those given first (in order), then any found under `roots` (sorted)."""
    found: dict[str, list[str]] = {task: [] for task in TASKS}
    candidates = [Path(w) for w in weights]
    for root in map(Path, roots):
        if root.is_dir():
            for level in range(1, depth + 1):
                candidates += sorted(p.parent for p in root.glob("/".join(["*"] * level) + "/config.json"))
    for folder in candidates:
        task = task_of(architecture(folder))
        if task and str(folder) not in found[task]:
            found[task].append(str(folder))
    return found


class PredictorCache:
    """Loads each offered folder once, on first use; `use(folder)` hands out the predictor under its lock."""

    def __init__(self, allowed: Iterable[str], load: Callable[[str], Any]):
        self.allowed = set(allowed)
        self._load = load
        self._items: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, folder: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(folder, threading.Lock())

    def get(self, folder: str) -> Any:
        """The predictor of `folder` (call under `lock(folder)`: predictors keep per-image state)."""
        if folder not in self.allowed:
            raise KeyError(folder)
        if folder not in self._items:
            self._items[folder] = self._load(folder)
        return self._items[folder]


def load_predictor(task: str, folder: str) -> Any:
    """What a tab runs for a model folder: a ReferringSegmenter (image), a VideoSegmenter (video) or the re-id
    model itself (reid: `vlalign.reid.search` takes the model)."""
    if task == "image":
        from vlalign.predictor import ReferringSegmenter

        return ReferringSegmenter.from_pretrained(folder)
    if task == "video":
        from vlalign.video_predictor import VideoSegmenter

        return VideoSegmenter.from_pretrained(folder)
    if task == "reid":
        from vlalign.models.pretrained import from_pretrained

        return from_pretrained(folder)
    raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
