"""Synthetic RegDB in the layout of the release (as distributed with the AGW code), people from `synth.sysu`.

    DIR/Visible/{pid}/{gender}_{view}_v_{frame:05d}_{pid}.bmp    10 per identity, 128x64, 24-bit BMP
    DIR/Thermal/{pid}/{gender}_{view}_t_{frame:05d}_{pid}.bmp    10 per identity, 24-bit BMP with R = G = B
    DIR/idx/{train,test}_{visible,thermal}_{trial}.txt          trials 1..10, lines "relative/path label"
    DIR/dataset.json, DIR/README.txt

RegDB was recorded by a dual (visible + far-infrared) camera, so the i-th visible and thermal images of an
identity share one pose and one frame number here. Thermal intensity follows surface temperature: skin is
the warmest, a garment's level comes from its material (independent of its colour), the background is cold;
strong blur, no colour. Each trial splits the identities in two random halves (206 / 206 in the release);
labels are relabelled per trial and split, in that trial's identity order (as the release's
"Visible/285/male_back_v_05528_285.bmp 0"). Stored as 24-bit BMP because the reference pipelines feed the
thermal arrays to 3-channel transforms without conversion. Same seed, same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vlalign.synth.sysu import DEFAULT_SEED, Camera, H, W, draw_labels, render, sample_person

DEFAULT_NUM_IDS = 412  # as the release
IMAGES_PER_ID = 10
NUM_TRIALS = 10
# a street camera from dusk to daylight, and a far-infrared camera looking at a cold background
VISIBLE = Camera("visible", (120, 120, 125), (70, 70, 72), (0.5, 0.7), 0.15, (1.0, 1.0, 1.05), (0.45, 1.0), 0.6, 4)
THERMAL = Camera("thermal", (0.12,), (0.22,), (0.5, 0.7), 0.10, (1, 1, 1), (0.85, 1.1), 1.5, 4)
MODALITIES = (("visible", "Visible", "v", VISIBLE), ("thermal", "Thermal", "t", THERMAL))


def generate_regdb(out_dir: str | Path, num_ids: int = DEFAULT_NUM_IDS, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """Write the synthetic RegDB to `out_dir`; return its summary (also written as dataset.json)."""
    if num_ids < 2:
        raise ValueError(f"num_ids must be >= 2 (one training and one test identity per trial), got {num_ids}")
    out = Path(out_dir)
    files: dict[int, dict[str, list[str]]] = {}
    frame = 0
    for pid in range(1, num_ids + 1):
        rng = np.random.default_rng([seed, 12, pid])
        person = sample_person(rng)
        view = str(rng.choice(["front", "back"]))  # one walking direction per recorded person
        frame += int(rng.integers(1, 40))  # the recording's frame counter moves on between people
        files[pid] = {"visible": [], "thermal": []}
        for k in range(IMAGES_PER_ID):
            frame += int(rng.integers(1, 4))
            labels = draw_labels(person, np.random.default_rng([seed, 13, pid, k]), view)  # one pose per pair
            for t, (modality, folder, letter, camera) in enumerate(MODALITIES):
                name = f"{folder}/{pid}/{person.gender}_{view}_{letter}_{frame:05d}_{pid}.bmp"
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                pixels = render(person, labels, camera, np.random.default_rng([seed, 14, pid, k, t]))
                Image.fromarray(pixels).save(out / name)
                files[pid][modality].append(name)
    (out / "idx").mkdir(parents=True, exist_ok=True)
    pids = np.arange(1, num_ids + 1)
    for trial in range(1, NUM_TRIALS + 1):
        order = np.random.default_rng([seed, 15, trial]).permutation(pids).tolist()
        halves = {"train": order[: num_ids // 2], "test": order[num_ids // 2 :]}
        for split, ids in halves.items():
            for modality, *_ in MODALITIES:
                lines = [f"{path} {label}" for label, pid in enumerate(ids) for path in files[pid][modality]]
                (out / "idx" / f"{split}_{modality}_{trial}.txt").write_text("\n".join(lines) + "\n")
    summary = {
        "out_dir": str(out),
        "seed": seed,
        "num_ids": num_ids,
        "image_size": [H, W],
        "images_per_modality": num_ids * IMAGES_PER_ID,
        "ids_per_trial": {"train": num_ids // 2, "test": num_ids - num_ids // 2},
        "trials": NUM_TRIALS,
    }
    with open(out / "dataset.json", "w") as f:  # without out_dir: same seed, same bytes, wherever written
        json.dump({k: v for k, v in summary.items() if k != "out_dir"}, f, indent=2)
    (out / "README.txt").write_text(_README.format(num_ids=num_ids, seed=seed))
    return summary


_README = """vlalign synthetic RegDB (release layout), from `vlalign synth regdb --num-ids {num_ids} --seed {seed}`.
Visible/ and Thermal/ hold 10 aligned images per identity (thermal: R = G = B); idx/ holds the 10 trials' train and
test lists ("relative/path label", labels relabelled per trial and split).
This data is synthetic: numbers measured on it say nothing about RegDB itself.
"""
