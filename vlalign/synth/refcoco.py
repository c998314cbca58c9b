"""The synthetic referring benchmark, written in the exact refer layout (RefCOCO, split_by "unc").

    DIR/refs(unc).p      pickle (protocol 2, builtin types only) of refs: ref_id, ann_id, image_id,
                         category_id, split, file_name, sent_ids, sentences [{raw, sent, sent_id, tokens}]
    DIR/instances.json   COCO: info, licenses, images, annotations, categories
    DIR/images/<name>    the images (JPEG by default)
    DIR/dataset.json     summary and generation parameters; DIR/README.txt   what this is
    DIR/synth_info.json  {"<sent_id>": {"form", "split"}}: each sentence's grammar form ("attributes",
                         "position", "ordinal", "relation"), for the per-form breakdown of `vlalign eval`

Splits mirror RefCOCO unc: train / val / testA / testB with disjoint images. testA images have targets of the
"round" kinds only and testB of the "angular" kinds only (RefCOCO: people vs other objects); train and val
mix both. Annotations cover every object of an image (as COCO does), not only the referred ones; their mask
is the *visible* region: COCO polygons for un-occluded objects, uncompressed RLE for occluded ones and for
rings (a polygon cannot carry a hole).

Each image is drawn from its own generator `numpy.random.default_rng([seed, index])`, so the output is a
pure function of (seed, num_images, sizes): the same seed gives the same bytes.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vlalign.synth import DEFAULT_MAX_SIZE, DEFAULT_MIN_SIZE, DEFAULT_NUM_IMAGES, DEFAULT_SEED, SYNTH_INFO
from vlalign.synth.expressions import Program, as_typed, describe, form_of, sample_programs, to_refer_sentence
from vlalign.synth.scenes import GROUP_OF, GROUPS, KINDS, Scene, render, sample_scene

SPLIT_SHARES = {"val": 0.09, "testA": 0.08, "testB": 0.08}  # the rest is train
SPLIT_FOCUS = {"train": None, "val": None, "testA": "round", "testB": "angular"}
OBJECTS_PER_IMAGE = (3, 7)
REFS_PER_IMAGE = (1, 4)
SENTENCES_PER_REF = (1, 3)
FILE_PREFIX = "SYNTH_refcoco_"


def assign_splits(num_images: int, seed: int) -> list[str]:
    """The split of each image index: fixed shares, every split non-empty, order shuffled by `seed`."""
    if num_images < 4:
        raise ValueError(f"num_images must be >= 4 (one image per split at least), got {num_images}")
    counts = {name: max(1, round(share * num_images)) for name, share in SPLIT_SHARES.items()}
    counts = {"train": num_images - sum(counts.values()), **counts}
    labels = [name for name, n in counts.items() for _ in range(n)]
    order = np.random.default_rng([seed, 0x5EED]).permutation(num_images)  # its own stream, not an image's
    return [labels[i] for i in order]


def rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts of a bool HxW mask: column-major runs, starting with a run of zeros."""
    flat = mask.ravel(order="F").astype(np.int8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = [int(v) for v in np.diff(bounds)]
    return [0, *runs] if flat.size and flat[0] else runs


def _annotation(obj: Any, ann_id: int, image_id: int, height: int, width: int) -> dict[str, Any]:
    ys, xs = obj.pixels("visible")
    x0, y0 = int(xs.min()), int(ys.min())
    bbox = [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)]
    if obj.occluded or obj.hole is not None:
        segmentation: Any = {"counts": rle_counts(obj.visible), "size": [height, width]}
    else:
        segmentation = [list(p) for p in obj.polygons]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": KINDS.index(obj.kind) + 1,
        "segmentation": segmentation,
        "area": float(len(ys)),
        "bbox": bbox,
        "iscrowd": 0,
    }


Sentence = tuple[Program, str]  # the program and its raw wording


def make_image(
    seed: int, index: int, split: str, min_size: int = DEFAULT_MIN_SIZE, max_size: int = DEFAULT_MAX_SIZE
) -> tuple[Scene, np.ndarray, list[tuple[int, list[Sentence]]]]:
    """One image of the benchmark: its scene, its pixels (HxWx3 uint8) and its refs as (object index,
    sentences)."""
    rng = np.random.default_rng([seed, index + 1])
    height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    focus = SPLIT_FOCUS[split]
    while True:  # a crowded canvas can drop objects; two at least keep every expression meaningful
        n_objects = int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1))
        scene = sample_scene(rng, height, width, n_objects, focus)
        if len(scene.objects) >= 2:
            break
    image = render(rng, scene)
    # Targets are a uniform draw among the eligible objects: size, centrality or paint order predict nothing.
    eligible = [i for i, o in enumerate(scene.objects) if focus is None or GROUP_OF[o.kind] == focus]
    n_refs = int(rng.integers(REFS_PER_IMAGE[0], REFS_PER_IMAGE[1] + 1))
    refs: list[tuple[int, list[Sentence]]] = []
    for target in rng.permutation(eligible):
        n_sent = int(rng.integers(SENTENCES_PER_REF[0], SENTENCES_PER_REF[1] + 1))
        sentences: list[Sentence] = []
        for program in sample_programs(rng, scene, int(target), n_sent):
            text = describe(rng, program)
            if all(text != t for _, t in sentences):
                sentences.append((program, text))
        if sentences:
            refs.append((int(target), [(p, as_typed(rng, t)) for p, t in sentences]))
        if len(refs) == n_refs:
            break
    return scene, image, refs


def generate_refcoco(
    out_dir: str | Path,
    num_images: int = DEFAULT_NUM_IMAGES,
    seed: int = DEFAULT_SEED,
    *,
    min_size: int = DEFAULT_MIN_SIZE,
    max_size: int = DEFAULT_MAX_SIZE,
    image_format: str = "jpg",
) -> dict[str, Any]:
    """Write the synthetic benchmark to `out_dir`; return a summary (counts per split, parameters)."""
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    if not 32 <= min_size <= max_size:
        raise ValueError(f"need 32 <= min_size <= max_size, got min_size={min_size}, max_size={max_size}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    splits = assign_splits(num_images, seed)

    images, annotations, refs = [], [], []
    stats: list[
        tuple[list[str], bool, bool]
    ] = []  # per ref: sentence forms, same-kind / same-colour distractor
    sent_info: dict[str, dict[str, str]] = {}  # synth_info.json
    ann_id = ref_id = sent_id = 0
    for index, split in enumerate(splits):
        image_id = index + 1
        scene, pixels, image_refs = make_image(seed, index, split, min_size, max_size)
        stem = f"{FILE_PREFIX}{image_id:012d}"
        file_name = f"{stem}.{image_format}"
        _save(pixels, out / "images" / file_name)
        images.append({"id": image_id, "file_name": file_name, "height": scene.height, "width": scene.width})
        first_ann = ann_id + 1
        for obj in scene.objects:
            ann_id += 1
            annotations.append(_annotation(obj, ann_id, image_id, scene.height, scene.width))
        for target, worded in image_refs:
            ref_id += 1
            sentences = [to_refer_sentence(raw, sent_id + k + 1) for k, (_, raw) in enumerate(worded)]
            forms = [form_of(program) for program, _ in worded]
            for sentence, form in zip(sentences, forms):
                sent_info[str(sentence["sent_id"])] = {"form": form, "split": split}
            sent_id += len(sentences)
            target_ann = first_ann + target
            refs.append(
                {
                    "sent_ids": [s["sent_id"] for s in sentences],
                    # as in RefCOCO, the ref's file_name carries an ann-id suffix; readers take the image file
                    # from instances.json
                    "file_name": f"{stem}_{target_ann}.{image_format}",
                    "ann_id": target_ann,
                    "ref_id": ref_id,
                    "image_id": image_id,
                    "split": split,
                    "sentences": sentences,
                    "category_id": annotations[target_ann - 1]["category_id"],
                }
            )
            obj, others = scene.objects[target], scene.objects[:target] + scene.objects[target + 1 :]
            stats.append(
                (
                    forms,
                    any(o.kind == obj.kind for o in others),
                    any(o.colour == obj.colour for o in others),
                )
            )

    categories = [
        {"id": i + 1, "name": kind, "supercategory": GROUP_OF[kind]} for i, kind in enumerate(KINDS)
    ]
    info = {
        "description": "vlalign synthetic referring benchmark (refer layout, RefCOCO unc splits)",
        "version": "1",
        "seed": seed,
        "num_images": num_images,
    }
    instances = {
        "info": info,
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    with open(out / "instances.json", "w") as f:
        json.dump(instances, f, separators=(",", ":"))
    with open(out / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    with open(out / SYNTH_INFO, "w") as f:
        json.dump(sent_info, f, separators=(",", ":"))

    summary = {
        "out_dir": str(out),
        "seed": seed,
        "num_images": num_images,
        "min_size": min_size,
        "max_size": max_size,
        "image_format": image_format,
        **_counts(refs, annotations, stats, splits),
    }
    with open(out / "dataset.json", "w") as f:  # without out_dir: same seed, same bytes, wherever written
        json.dump({k: v for k, v in summary.items() if k != "out_dir"}, f, indent=2)
    (out / "README.txt").write_text(_README.format(**summary))
    return summary


def _save(pixels: np.ndarray, path: Path) -> None:
    if path.suffix == ".jpg":
        Image.fromarray(pixels).save(path, quality=90)  # COCO-like JPEG artefacts
    else:
        Image.fromarray(pixels).save(path)


def _counts(
    refs: list[dict], annotations: list[dict], stats: list[tuple[list[str], bool, bool]], splits: list[str]
) -> dict[str, Any]:
    """Per-split counts, annotation kinds, sentence forms and how often targets share attributes."""
    per_split = {}
    for name in ("train", "val", "testA", "testB"):
        split_refs = [r for r in refs if r["split"] == name]
        per_split[name] = {
            "images": splits.count(name),
            "refs": len(split_refs),
            "sentences": sum(len(r["sentences"]) for r in split_refs),
        }
    forms: dict[str, int] = {}
    for ref_forms, _, _ in stats:
        for form in ref_forms:
            forms[form] = forms.get(form, 0) + 1
    n_refs = max(len(stats), 1)
    n_rle = sum(isinstance(a["segmentation"], dict) for a in annotations)
    return {
        "splits": per_split,
        "annotations": len(annotations),
        "polygon_annotations": len(annotations) - n_rle,
        "rle_annotations": n_rle,
        "groups": {name: list(kinds) for name, kinds in GROUPS.items()},
        "sentence_forms": dict(sorted(forms.items())),
        # share of targets with another object of the same kind / colour / either in their image
        "targets_sharing_kind": round(sum(k for _, k, _ in stats) / n_refs, 3),
        "targets_sharing_colour": round(sum(c for _, _, c in stats) / n_refs, 3),
        "targets_sharing_kind_or_colour": round(sum(k or c for _, k, c in stats) / n_refs, 3),
    }


_README = """vlalign synthetic referring benchmark (refer layout, split_by "unc")

Generated by `vlalign synth refcoco --num-images {num_images} --seed {seed}` (sizes {min_size}-{max_size} px).
Files: refs(unc).p, instances.json, images/, dataset.json (counts per split).
testA targets are round shapes (circle, oval, ring, heart, crescent), testB targets angular ones (square,
triangle, star, hexagon, cross); train and val mix both. Every expression was checked to select exactly one
object. Masks are the visible regions: polygons when un-occluded, uncompressed RLE when occluded or ringed.
This data is synthetic: numbers measured on it say nothing about RefCOCO itself.
"""
