"""Training data for visible-infrared re-identification: augmented images of both modalities, PK batches.

`ReidTrainSet(visible, infrared, size)` holds both modalities' `ReidImages`; item i is
{"image": 3xHxW float in [0, 1], "pid": label 0..N-1 (identities relabelled in increasing order), "modality":
0 visible / 1 infrared}. Augmentations (CLIP-ReID / CAJ): horizontal flip 0.5; zero padding 10 + random crop;
for visible images, channel exchange with probability 0.5 (all three channels become R, G, B or the grey
level, CAJ's `ChannelExchange`, here on the one view: ours); for either modality, with `remap_prob` (default
0, ours), the grey level through a random curve (`remap_grey`); random erasing 0.5 (area 2-40 %, aspect 0.3-3.3,
filled with uniform noise). Each item draws them from `numpy.random.default_rng((seed, epoch, index))`, so a
resumed run sees the same augmented images (call `set_epoch`).

`PKBatchSampler`: every global batch holds P identities x K images, K / 2 visible and K / 2 infrared (AGW's
IdentitySampler balances the modalities the same way). An epoch is one pass over the identities in a random
order from (seed, epoch), cut into groups of P (the tail dropped); each identity's images are drawn without
replacement while it has enough, otherwise with replacement, and an identity missing a modality takes all K
from the other. It subclasses the engine's `ResumableBatchSampler` (same position, split across ranks and
accumulation steps), so `vlalign.engine.train(..., sampler_factory=pk_sampler(K))` resumes exactly.

`FeatureSet` serves precomputed features (stage 1 of CLIP4VI-ReID); `load_test_image` is the evaluation
preprocessing (resize only).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from vlalign.data.images import load_image
from vlalign.data.sysu import ReidImages
from vlalign.engine.sampler import ResumableBatchSampler

__all__ = ["FeatureSet", "PKBatchSampler", "ReidTrainSet", "load_test_image", "luma", "pk_sampler", "remap_grey"]

VISIBLE, INFRARED = 0, 1


def load_test_image(path: str, size: tuple[int, int]) -> Tensor:
    """The image at `path` resized to size (H, W): 3xHxW float in [0, 1]."""
    image = load_image(path).resize((size[1], size[0]), Image.BILINEAR)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


class ReidTrainSet(Dataset):
    """Both modalities' training images (visible first, then infrared), augmented per (seed, epoch, index)."""

    def __init__(self, visible: ReidImages, infrared: ReidImages, size: tuple[int, int], seed: int = 0,
                 augment: bool = True, pad: int = 10, flip_prob: float = 0.5, channel_prob: float = 0.5,
                 erase_prob: float = 0.5, remap_prob: float = 0.0, remap_knots: int = 5):
        if len(visible) == 0 or len(infrared) == 0:
            raise ValueError(f"training needs both modalities: {len(visible)} visible, {len(infrared)} infrared "
                             "images")
        self.paths = list(visible.paths) + list(infrared.paths)
        raw = np.concatenate([visible.pids, infrared.pids])
        self.pid_values, self.labels = np.unique(raw, return_inverse=True)  # labels 0..N-1, ordered by pid
        self.labels = self.labels.reshape(-1).astype(np.int64)
        self.modalities = np.r_[np.full(len(visible), VISIBLE), np.full(len(infrared), INFRARED)].astype(np.int64)
        self.size = tuple(size)
        self.seed, self.epoch, self.augment = seed, 0, augment
        self.pad, self.flip_prob, self.channel_prob, self.erase_prob = pad, flip_prob, channel_prob, erase_prob
        if remap_knots < 2:
            raise ValueError(f"remap_knots must be >= 2 (a curve needs two ends), got {remap_knots}")
        self.remap_prob, self.remap_knots = remap_prob, remap_knots

    @property
    def num_ids(self) -> int:
        return len(self.pid_values)

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict:
        image = load_test_image(self.paths[index], self.size)
        if self.augment:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            image = self._augment(image, rng, self.modalities[index] == VISIBLE)
        return {"image": image, "pid": int(self.labels[index]), "modality": int(self.modalities[index])}

    def _augment(self, image: Tensor, rng: np.random.Generator, visible: bool) -> Tensor:
        h, w = self.size
        if rng.random() < self.flip_prob:
            image = image.flip(-1)
        if self.pad:
            padded = torch.nn.functional.pad(image, (self.pad,) * 4)
            top, left = rng.integers(0, 2 * self.pad + 1, size=2)
            image = padded[:, top:top + h, left:left + w]
        if visible and rng.random() < self.channel_prob:
            k = int(rng.integers(0, 4))  # R, G, B, or the luma (ITU-R 601, as PIL's "L")
            one = image[k] if k < 3 else luma(image)
            image = one.expand(3, h, w)
        if rng.random() < self.remap_prob:
            image = remap_grey(image, rng.random(self.remap_knots, dtype=np.float32)).expand(3, h, w)
        if rng.random() < self.erase_prob:
            image = _erase(image.clone(), rng)
        return image.contiguous()


def luma(image: Tensor) -> Tensor:
    """(..., 3, H, W) RGB -> (..., H, W) ITU-R 601 luma, as PIL's "L" (CAJ's grey channel; the re-id model's
    `gray_input` uses the same, so that it leaves CAJ's grey images unchanged)."""
    return 0.299 * image[..., 0, :, :] + 0.587 * image[..., 1, :, :] + 0.114 * image[..., 2, :, :]


def remap_grey(image: Tensor, knots: np.ndarray) -> Tensor:
    """(3, H, W) RGB in [0, 1] -> (H, W): the luma passed through the piecewise-linear curve through
    `knots` (K values in [0, 1] at evenly spaced grey levels 0..1).

    Why (ours): in near-infrared a garment's grey level comes from its material, not its colour, so a person's
    visible luminances say nothing about their infrared ones. A random, usually non-monotone curve gives
    every grey level of the image a new, random one: what stays is where the edges are (silhouette, stripes,
    hair line), which is what both modalities share. An edge survives wherever the curve is not flat.
    """
    x = luma(image).clamp(0, 1) * (len(knots) - 1)
    lo = x.floor().clamp(max=len(knots) - 2)
    k = torch.from_numpy(knots)
    i = lo.long()
    return k[i] + (x - lo) * (k[i + 1] - k[i])


def _erase(image: Tensor, rng: np.random.Generator, attempts: int = 10) -> Tensor:
    """Random erasing (Zhong et al.): a rectangle of 2-40 % of the area, aspect 0.3-3.3, set to noise."""
    _, h, w = image.shape
    for _ in range(attempts):
        area = rng.uniform(0.02, 0.4) * h * w
        aspect = np.exp(rng.uniform(np.log(0.3), np.log(1 / 0.3)))
        eh, ew = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
        if 0 < eh < h and 0 < ew < w:
            top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
            image[:, top:top + eh, left:left + ew] = torch.from_numpy(rng.random((3, eh, ew), dtype=np.float32))
            return image
    return image


class FeatureSet(Dataset):
    """Precomputed features: item i = {"image_feature": (D,) float tensor, "pid": int label}."""

    def __init__(self, features: Tensor, labels: np.ndarray):
        if len(features) != len(labels):
            raise ValueError(f"{len(features)} features but {len(labels)} labels")
        self.features, self.labels = features, np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"image_feature": self.features[index], "pid": int(self.labels[index])}


class PKBatchSampler(ResumableBatchSampler):
    """P identities x K images (K / 2 per modality) per global batch; needs a dataset with `labels` and
    `modalities` arrays (ReidTrainSet). Arguments as ResumableBatchSampler, plus `num_instances` = K."""

    def __init__(self, dataset, batch_per_process: int, world_size: int = 1, rank: int = 0, grad_accum: int = 1,
                 seed: int = 0, drop_last: bool = True, *, num_instances: int = 4):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        if num_instances < 2 or num_instances % 2:
            raise ValueError(f"num_instances must be even (half visible, half infrared), got {num_instances}")
        if batch_per_process % num_instances:
            # an identity's K images must stay in one micro-batch: the triplet loss needs its positives there
            raise ValueError(f"the per-process micro-batch ({batch_per_process}) must be a multiple of "
                             f"num_instances ({num_instances})")
        self.dataset, self.micro, self.world_size, self.rank = dataset, batch_per_process, world_size, rank
        self.grad_accum, self.seed, self.drop_last = grad_accum, seed, drop_last
        self.global_batch = batch_per_process * world_size * grad_accum
        self.num_instances = num_instances
        self.ids_per_batch = self.global_batch // num_instances
        labels, modalities = np.asarray(dataset.labels), np.asarray(dataset.modalities)
        self.ids = np.unique(labels)
        # per identity: (visible indices, infrared indices)
        self.members = {int(i): (np.flatnonzero((labels == i) & (modalities == VISIBLE)),
                                 np.flatnonzero((labels == i) & (modalities == INFRARED))) for i in self.ids}
        self.iters_per_epoch = len(self.ids) // self.ids_per_batch
        if self.iters_per_epoch == 0:
            raise ValueError(f"{len(self.ids)} identities are fewer than the {self.ids_per_batch} identities of one "
                             f"global batch ({self.global_batch} images / {num_instances} per identity)")
        self.epoch = 0
        self.start_iter = 0

    def _draw(self, rng: np.random.Generator, pool: np.ndarray, k: int) -> np.ndarray:
        return rng.choice(pool, size=k, replace=len(pool) < k)

    def epoch_order(self) -> np.ndarray:
        """Flat indices: `iters_per_epoch` global batches, each P groups of K (visible half, infrared half)."""
        rng = np.random.default_rng((self.seed, self.epoch))
        ids = rng.permutation(self.ids)[: self.iters_per_epoch * self.ids_per_batch]
        half = self.num_instances // 2
        groups = []
        for pid in ids.tolist():
            vis, ir = self.members[pid]
            if len(vis) and len(ir):
                groups += [self._draw(rng, vis, half), self._draw(rng, ir, half)]
            else:
                groups.append(self._draw(rng, vis if len(vis) else ir, self.num_instances))
        return np.concatenate(groups)


def pk_sampler(num_instances: int):
    """A `sampler_factory` for `vlalign.engine.train`: PK batches with K = num_instances."""
    return functools.partial(PKBatchSampler, num_instances=num_instances)
