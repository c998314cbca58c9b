"""Synthetic data sets written in the real benchmarks' file layouts (the project's embedded default data).

- `vlalign.synth.refcoco.generate_refcoco(out_dir, num_images, seed)`: the synthetic referring benchmark in
  the refer layout (RefCOCO unc splits), read unchanged by `vlalign.data.refer.ReferDataset`;
- `vlalign.synth.scenes`: scene sampling and rendering (shapes, colours, sizes, textured backgrounds);
- `vlalign.synth.expressions`: referring expressions as programs, the uniqueness check, their wording;
- `vlalign.synth.ytvos.generate_ytvos(out, num_videos, seed)`: moving shapes in the Ref-YouTube-VOS layout,
  most expressions resolvable only from motion (`vlalign.synth.motion`: motions and rendering);
- `vlalign.synth.sysu` / `regdb`: visible-infrared re-identification sets in the SYSU-MM01 / RegDB layouts.

The defaults of the default benchmark live here, without heavy imports, so that the CLI can show them.
"""

from __future__ import annotations

import json
from pathlib import Path

# `vlalign synth refcoco --out DIR` with these values is "the default benchmark": 900 train images with about
# 2,200 refs (4,200 sentences), 400-550 expressions in each of val / testA / testB; about 30 s on one core.
DEFAULT_NUM_IMAGES = 1200
DEFAULT_SEED = 0
DEFAULT_MIN_SIZE = 256  # image sides are drawn in [min, max] px, independently for height and width
DEFAULT_MAX_SIZE = 384

SYNTH_INFO = "synth_info.json"  # what a generator knows of each expression (form, kind), beside the real layout

__all__ = ["DEFAULT_MAX_SIZE", "DEFAULT_MIN_SIZE", "DEFAULT_NUM_IMAGES", "DEFAULT_SEED", "SYNTH_INFO",
           "load_synth_info"]


def load_synth_info(data_dir) -> dict | None:
    """The generator's `synth_info.json` of a data folder, or None for real data (which has none)."""
    path = Path(data_dir) / SYNTH_INFO
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); regenerate the data set or delete the file") from e
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a JSON object keyed by expression, got {type(info).__name__}")
    return info
