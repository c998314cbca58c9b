"""RefCOCO / RefCOCO+ / RefCOCOg in the refer layout, read with Python 3 and without the refer API.

Layout (lichengunc/refer):

    <data_dir>/refs(<split_by>).p  pickle (written by Python 2): list of refs {ref_id, ann_id, image_id,
                                   category_id, split, file_name, sent_ids,
                                   sentences[{raw, sent, sent_id, tokens}]}
    <data_dir>/instances.json      COCO: images[{id, file_name, height, width}],
                                   annotations[{id, image_id, segmentation (polygons or RLE), bbox,
                                   category_id}], categories[{id, name}]
    <image_dir>/<file_name>        default image_dir = <data_dir>/images (COCO train2014)

Splits: unc (RefCOCO, RefCOCO+) train/val/testA/testB; umd (RefCOCOg) train/val/test; google train/val.
Whatever splits the refs file contains are accepted.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vlalign.data.images import load_image
from vlalign.data.masks import decode_segmentation
from vlalign.data.transforms import identity_params, pil_to_tensor

__all__ = ["KNOWN_SPLITS", "ReferDataset", "load_instances", "load_refs"]

KNOWN_SPLITS = {
    "unc": ("train", "val", "testA", "testB"),
    "umd": ("train", "val", "test"),
    "google": ("train", "val"),
}
_MASK_CACHE_SIZE = (
    16  # eval mode visits all sentences of a ref in a row, so a few entries give most of the hits
)


class _GlobalRefused(pickle.UnpicklingError):
    pass


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickler that can only build builtin containers, strings and numbers.

    Every class or function reference (GLOBAL / STACK_GLOBAL, the only way a pickle can reach code to call)
    is refused, so a refs file can never execute anything while it is read.
    """

    def find_class(self, module: str, name: str) -> Any:
        raise _GlobalRefused(f"{module}.{name}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(entry: Any, key: str, check: Callable[[Any], bool], expected: str, where: str) -> Any:
    """entry[key], or ValueError naming `where`, the field and what was expected."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a dict, got {type(entry).__name__}")
    if key not in entry:
        raise ValueError(f"{where}: missing field {key!r}")
    if not check(entry[key]):
        raise ValueError(f"{where}: field {key!r} must be {expected}, got {entry[key]!r:.60}")
    return entry[key]


def load_refs(path: str | os.PathLike) -> list[dict]:
    """Read a refs(<split_by>).p pickle safely: the list of ref dicts (only their `split` is checked here).

    Python 2 `str` values are decoded as ASCII, or as latin-1 when that fails (one byte = one character, so
    the load always succeeds; non-ASCII sentences written as Python 2 `unicode` keep their real characters).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"refs file not found: {path}")
    data = path.read_bytes()
    refs: Any = None
    for encoding in ("ASCII", "latin1"):
        try:
            refs = _PlainDataUnpickler(io.BytesIO(data), encoding=encoding).load()
            break
        except UnicodeDecodeError:
            continue
        except _GlobalRefused as err:
            raise ValueError(
                f"{path}: the refs pickle references the global {err}; only plain lists, dicts, strings and "
                "numbers are accepted (loading it could run arbitrary code)"
            ) from err
        except Exception as err:  # garbage makes pickle raise almost anything (EOFError, KeyError, ...)
            raise ValueError(f"{path}: not a readable refs pickle ({type(err).__name__}: {err})") from err
    if not isinstance(refs, list):
        raise ValueError(f"{path}: expected a list of refs, got {type(refs).__name__}")
    for k, ref in enumerate(refs):
        _require(ref, "split", lambda v: isinstance(v, str), "a string", f"{path}: refs[{k}]")
    return refs


def load_instances(path: str | os.PathLike) -> tuple[dict[int, dict], dict[int, dict], dict[int, str]]:
    """Read instances.json -> (images by id, annotations by id, category names by id).

    Each image dict has file_name, height, width; each annotation dict is the raw COCO entry (id, image_id and
    segmentation checked here; the segmentation itself is decoded and checked lazily).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"instances file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a JSON object with images, annotations, categories")
    is_list = lambda v: isinstance(v, list)
    is_size = lambda v: _is_int(v) and v > 0
    images: dict[int, dict] = {}
    for k, entry in enumerate(_require(content, "images", is_list, "a list", str(path))):
        where = f"{path}: images[{k}]"
        image_id = _require(entry, "id", _is_int, "an int", where)
        images[image_id] = {
            "file_name": _require(
                entry, "file_name", lambda v: isinstance(v, str) and v, "a file name", where
            ),
            "height": _require(entry, "height", is_size, "a positive int", where),
            "width": _require(entry, "width", is_size, "a positive int", where),
        }
    annotations: dict[int, dict] = {}
    for k, entry in enumerate(_require(content, "annotations", is_list, "a list", str(path))):
        where = f"{path}: annotations[{k}]"
        _require(entry, "image_id", _is_int, "an int", where)
        _require(
            entry, "segmentation", lambda v: isinstance(v, list | dict), "polygons or an RLE dict", where
        )
        annotations[_require(entry, "id", _is_int, "an int", where)] = entry
    categories: dict[int, str] = {}
    for k, entry in enumerate(_require(content, "categories", is_list, "a list", str(path))):
        where = f"{path}: categories[{k}]"
        category_id = _require(entry, "id", _is_int, "an int", where)
        categories[category_id] = _require(entry, "name", lambda v: isinstance(v, str), "a string", where)
    return images, annotations, categories


class ReferDataset(Dataset):
    """Referring segmentation samples of one split (see ARCHITECTURE.md, "Samples and batches").

    mode="train": one item per ref, its sentence drawn from default_rng((seed, epoch, index)) (`set_epoch`).
    mode="eval": one item per sentence, in refs-file order, with `orig_mask` (uint8 HxW) added.
    `transform(image, mask) -> (image 3xSxS, mask SxS, params)`; without one, the image is the full-size float
    3xHxW tensor and params are `identity_params(H, W)`.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        split: str,
        *,
        split_by: str = "unc",
        image_dir: str | os.PathLike | None = None,
        mode: str = "train",
        transform: Callable | None = None,
        seed: int = 0,
    ) -> None:
        if mode not in ("train", "eval"):
            raise ValueError(f"ReferDataset mode must be 'train' or 'eval', got {mode!r}")
        if not _is_int(seed) or seed < 0:
            raise ValueError(f"ReferDataset seed must be a non-negative int, got {seed!r}")
        self.data_dir = Path(data_dir)
        self.refs_path = self.data_dir / f"refs({split_by}).p"
        self.instances_path = self.data_dir / "instances.json"
        self.image_dir = Path(image_dir) if image_dir is not None else self.data_dir / "images"
        self.split, self.split_by, self.mode = split, split_by, mode
        self.transform, self.seed, self.epoch = transform, seed, 0

        if not self.refs_path.is_file():
            present = (
                sorted(p.name for p in self.data_dir.glob("refs(*).p")) if self.data_dir.is_dir() else []
            )
            raise FileNotFoundError(f"refs file not found: {self.refs_path} (refs files present: {present})")
        all_refs = load_refs(self.refs_path)
        available = sorted({ref["split"] for ref in all_refs})
        if split not in available:
            raise ValueError(f"{self.refs_path}: unknown split {split!r}; available splits: {available}")
        self._images, self._annotations, self.categories = load_instances(self.instances_path)
        self._refs = [self._check_ref(ref) for ref in all_refs if ref["split"] == split]
        # eval order: every sentence of every ref, refs in file order
        self._sentences = [(r, s) for r, ref in enumerate(self._refs) for s in range(len(ref["sentences"]))]
        sent_ids = [self._refs[r]["sentences"][s]["sent_id"] for r, s in self._sentences]
        if len(set(sent_ids)) != len(sent_ids):
            raise ValueError(f"{self.refs_path}: split {split!r} has duplicate sent_id values")
        self._mask_cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def _check_ref(self, ref: dict) -> dict:
        """Validate one ref of the selected split against the refs file and instances.json."""
        where = f"{self.refs_path}: ref {ref.get('ref_id', '?')}"
        _require(ref, "ref_id", _is_int, "an int", where)
        ann_id = _require(ref, "ann_id", _is_int, "an int", where)
        image_id = _require(ref, "image_id", _is_int, "an int", where)
        sentences = _require(ref, "sentences", lambda v: isinstance(v, list) and v, "a non-empty list", where)
        for k, sentence in enumerate(sentences):
            _require(sentence, "sent", lambda v: isinstance(v, str), "a string", f"{where}: sentences[{k}]")
            _require(sentence, "sent_id", _is_int, "an int", f"{where}: sentences[{k}]")
        if image_id not in self._images:
            raise ValueError(f"{where}: image_id {image_id} is not in {self.instances_path}")
        if ann_id not in self._annotations:
            raise ValueError(f"{where}: ann_id {ann_id} is not in {self.instances_path}")
        if self._annotations[ann_id]["image_id"] != image_id:
            raise ValueError(
                f"{where}: ann_id {ann_id} belongs to image {self._annotations[ann_id]['image_id']} in "
                f"{self.instances_path}, not to the ref's image_id {image_id}"
            )
        return ref

    # sizes
    def __len__(self) -> int:
        return len(self._refs) if self.mode == "train" else len(self._sentences)

    @property
    def num_refs(self) -> int:
        return len(self._refs)

    @property
    def num_sentences(self) -> int:
        return len(self._sentences)

    @property
    def sent_ids(self) -> list[int]:
        """sent_id of every sentence in eval order."""
        return [self._refs[r]["sentences"][s]["sent_id"] for r, s in self._sentences]

    @property
    def refs(self) -> list[dict]:
        """The split's refs, in file order (the loaded dicts: do not modify)."""
        return self._refs

    def image_annotations(self, image_id: int) -> list[int]:
        """ann_id of every annotated object of an image, in instances.json order."""
        if image_id not in self._images:
            raise KeyError(f"image_id {image_id} is not in {self.instances_path}")
        return [a for a, ann in self._annotations.items() if ann["image_id"] == image_id]

    def image_info(self, image_id: int) -> dict[str, Any]:
        """{"file_name", "height", "width", "path"} of an image of instances.json (a copy)."""
        if image_id not in self._images:
            raise KeyError(f"image_id {image_id} is not in {self.instances_path}")
        info = dict(self._images[image_id])
        info["path"] = self.image_dir / info["file_name"]
        return info

    def set_epoch(self, epoch: int) -> None:
        """Select the training sentences of `epoch` (call before each epoch, in every worker's copy)."""
        if not _is_int(epoch) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch = epoch

    # masks
    def ann_mask(self, ann_id: int) -> np.ndarray:
        """Ground-truth mask of an annotation: uint8 HxW {0, 1} at original size (cached, read-only)."""
        mask = self._mask_cache.get(ann_id)
        if mask is not None:
            self._mask_cache.move_to_end(ann_id)
            return mask
        ann = self._annotations[ann_id]
        info = self._images[ann["image_id"]]
        mask = decode_segmentation(
            ann["segmentation"], info["height"], info["width"], ann_id=ann_id, source=str(self.instances_path)
        )
        mask.setflags(write=False)  # shared through the cache: callers get copies when they may modify
        self._mask_cache[ann_id] = mask
        if len(self._mask_cache) > _MASK_CACHE_SIZE:
            self._mask_cache.popitem(last=False)
        return mask

    def eval_targets(self) -> Iterator[tuple[int, np.ndarray]]:
        """(sent_id, uint8 HxW mask) for every sentence in eval order, without reading any image."""
        for r, s in self._sentences:
            ref = self._refs[r]
            yield ref["sentences"][s]["sent_id"], self.ann_mask(ref["ann_id"])

    # samples
    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        if self.mode == "eval":
            return self._sentences[index]
        n = len(self._refs[index]["sentences"])
        return index, int(np.random.default_rng((self.seed, self.epoch, index)).integers(n))

    def text(self, index: int) -> str:
        """The sentence of item `index` (this epoch's draw in train mode) without reading the image."""
        ref_index, sent_index = self._locate(index)
        return self._refs[ref_index]["sentences"][sent_index]["sent"]

    def __getitem__(self, index: int) -> dict[str, Any]:
        ref_index, sent_index = self._locate(index)
        ref = self._refs[ref_index]
        sentence = ref["sentences"][sent_index]
        info = self._images[ref["image_id"]]
        image_path = self.image_dir / info["file_name"]
        image = load_image(image_path)
        height, width = info["height"], info["width"]
        if (image.height, image.width) != (height, width):
            raise ValueError(
                f"{image_path}: image is {image.height}x{image.width} (HxW) but {self.instances_path} says "
                f"{height}x{width}; the masks would not align"
            )
        mask = self.ann_mask(ref["ann_id"])
        if self.transform is not None:
            image_t, mask_t, params = self.transform(image, mask)
        else:
            image_t, mask_t = pil_to_tensor(image), torch.from_numpy(mask.astype(np.float32))
            params = identity_params(height, width)
        sample = {
            "image": image_t,
            "mask": mask_t,
            "text": sentence["sent"],
            "sent_id": sentence["sent_id"],
            "ref_id": ref["ref_id"],
            "image_id": ref["image_id"],
            "orig_size": (height, width),
            "transform": params,
        }
        if self.mode == "eval":
            sample["orig_mask"] = mask.copy()
        return sample

    def __repr__(self) -> str:
        return (
            f"ReferDataset({str(self.data_dir)!r}, split={self.split!r}, split_by={self.split_by!r}, "
            f"mode={self.mode!r}, refs={self.num_refs}, sentences={self.num_sentences})"
        )
