"""Losses of CLIP4VI-ReID, in the forms of CLIP-ReID (Syliz517/CLIP-ReID `loss/`), written as plain functions.

- `supcon_loss`: supervised contrastive loss between two sets (image -> text or text -> image): for every
  anchor, the mean log-probability of its positives (same label) among all candidates (CLIP-ReID
  `SupConLoss`; repeated labels give several positives per anchor).
- `smooth_ce`: cross-entropy with label smoothing eps (target (1 - eps) one-hot + eps / K uniform, as
  CLIP-ReID's `CrossEntropyLabelSmooth`).
- `triplet_hard_loss`: batch-hard triplet loss on Euclidean distances (hardest positive, hardest negative per
  anchor, margin ranking), optionally across modalities only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["pairwise_distance", "smooth_ce", "supcon_loss", "triplet_hard_loss"]


def supcon_loss(anchors: Tensor, candidates: Tensor, anchor_labels: Tensor, candidate_labels: Tensor,
                scale: float = 1.0) -> Tensor:
    """Supervised contrastive loss: anchors (A, D), candidates (C, D), labels (A,) and (C,) -> scalar.

    logits = scale * anchors @ candidates.T; each anchor's loss is minus the mean, over the candidates with its
    label, of log softmax(logits) (CLIP-ReID: scale 1 on raw CLIP features). Anchors without a positive
    candidate are ignored; if none has one, ValueError (a sampling bug, not a loss of 0).
    """
    if anchors.ndim != 2 or candidates.ndim != 2 or anchors.shape[1] != candidates.shape[1]:
        raise ValueError(f"supcon_loss: anchors {tuple(anchors.shape)} and candidates {tuple(candidates.shape)}"
                         " must be (A, D) and (C, D)")
    logits = scale * anchors @ candidates.t()  # (A, C)
    positive = (anchor_labels[:, None] == candidate_labels[None, :]).to(logits.dtype)
    counts = positive.sum(1)
    valid = counts > 0
    if not valid.any():
        raise ValueError("supcon_loss: no anchor has a candidate with its label")
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    mean_pos = (positive * log_prob).sum(1)[valid] / counts[valid]
    return -mean_pos.mean()


def smooth_ce(logits: Tensor, labels: Tensor, epsilon: float = 0.1) -> Tensor:
    """Label-smoothed cross-entropy: logits (B, K), labels (B,) long -> scalar.

    Target distribution (1 - eps) onehot + eps / K (CLIP-ReID `CrossEntropyLabelSmooth`, the same as torch's
    `label_smoothing`, spelled out so that the formula is visible and tested).
    """
    log_prob = F.log_softmax(logits.float(), dim=1)
    k = logits.shape[1]
    target = torch.full_like(log_prob, epsilon / k)
    target.scatter_(1, labels[:, None], 1.0 - epsilon + epsilon / k)
    return -(target * log_prob).sum(1).mean()


def pairwise_distance(x: Tensor) -> Tensor:
    """x (B, D) -> (B, B) Euclidean distances, clamped away from 0 before the square root (finite gradient)."""
    sq = (x * x).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * x @ x.t()
    return d2.clamp(min=1e-12).sqrt()


def triplet_hard_loss(features: Tensor, labels: Tensor, margin: float = 0.3,
                      modalities: Tensor | None = None) -> Tensor:
    """Batch-hard triplet loss: features (B, D), labels (B,) -> scalar.

    For each anchor: d_ap = distance to its farthest positive (same label, not itself), d_an = distance to its
    closest negative; loss = mean(max(0, d_ap - d_an + margin)) over anchors with both (CLIP-ReID/TriHard).
    With `modalities` (B,), positives and negatives are taken from the *other* modality only (cross-modality
    triplet). Anchors lacking a positive or a negative are left out; if none is left, ValueError.
    """
    dist = pairwise_distance(features.float())
    same = labels[:, None] == labels[None, :]
    allowed = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    if modalities is not None:
        allowed &= modalities[:, None] != modalities[None, :]
    pos, neg = same & allowed, ~same & allowed
    valid = pos.any(1) & neg.any(1)
    if not valid.any():
        raise ValueError("triplet_hard_loss: no anchor has both a positive and a negative in the batch "
                         "(use identity-balanced PK batches)")
    d_ap = torch.where(pos, dist, torch.full_like(dist, -1.0)).amax(1)
    d_an = torch.where(neg, dist, torch.full_like(dist, float("inf"))).amin(1)
    return F.relu(d_ap - d_an + margin)[valid].mean()
