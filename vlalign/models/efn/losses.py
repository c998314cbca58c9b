"""EFN's 12-term loss: at each of the 4 decoder levels, BCE of the mask, body and edge predictions.

Targets (release): mask and body predictions against the object mask; edge predictions against the
*boundary band*, the pixels within `radius` (2) pixels (Euclidean) of the other class, the image border
counting as background. Every prediction is upsampled to the input resolution first; each term is a mean
BCE, weighted by its kind's weight (release: all 1). Ours: the edge terms use BCE on logits (the release
applies a sigmoid then BCE, the same value with less numerical range). Also ours, off unless `dice_weight`
is set (efn_lite: 1): a soft Dice term over the four mask outputs, `loss_dice` — with BCE alone, a small
foreground collapses to "all background" on a short CPU budget (an efn_lite run of 340 iterations predicted
nothing: val mIoU 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vlalign.models.alignformer.losses import dice_loss

__all__ = ["boundary_band", "efn_losses"]


def _disk(radius: int, device=None) -> Tensor:
    r = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2).float()[None, None]  # (1, 1, 2r+1, 2r+1)


def boundary_band(mask: Tensor, radius: int = 2) -> Tensor:
    """mask (B, H, W) in {0, 1} -> (B, H, W) float {0, 1}: pixels within `radius` of a pixel of the other
    class (outside the image counts as background), i.e. a band 2*radius wide across the boundary."""
    fg = (mask > 0.5).float()[:, None]
    disk = _disk(radius, mask.device)
    near_fg = F.conv2d(fg, disk, padding=radius) > 0  # zero padding: outside is not foreground
    near_bg = F.conv2d(F.pad(1 - fg, (radius,) * 4, value=1.0), disk) > 0  # outside is background
    return (near_fg & near_bg)[:, 0].float()


def efn_losses(levels: list[dict[str, Tensor]], target: Tensor, *, mask_weight: float = 1.0,
               body_weight: float = 1.0, edge_weight: float = 1.0, radius: int = 2,
               dice_weight: float = 0.0) -> dict[str, Tensor]:
    """levels: [level 1, ..., level 4], each {"mask"[, "body", "edge"]: logits (B, H, W) at input size};
    target (B, H, W) in {0, 1} -> {"loss_mask1": ..., "loss_body1": ..., "loss_edge1": ..., ...}."""
    target = target.float()
    targets = {"mask": target, "body": target}
    if any("edge" in level for level in levels):
        with torch.no_grad():
            targets["edge"] = boundary_band(target, radius)
    weights = {"mask": mask_weight, "body": body_weight, "edge": edge_weight}
    losses = {}
    for k, level in enumerate(levels, start=1):
        for kind, logits in level.items():
            bce = F.binary_cross_entropy_with_logits(logits.float(), targets[kind])
            losses[f"loss_{kind}{k}"] = weights[kind] * bce
    if dice_weight:
        losses["loss_dice"] = dice_weight * dice_loss([level["mask"].float() for level in levels], target)
    return losses
