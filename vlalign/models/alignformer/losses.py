"""AlignFormer's losses.

- `bce_loss` (release, mqchen1993/LGFormer `train.py`): BCE-with-logits, pos_weight 1.1, mean over pixels at
  input resolution, summed over the N+1 deep-supervision outputs.
- `dice_loss` (ours, off at paper scale): soft Dice summed over the same outputs.
- `instance_contrastive_loss` (ours: the paper names a *cross-modal instance contrastive loss* that reduces
  the influence of ambiguous pixels; the release has none). On L2-normalised stride-4 pixel embeddings z and
  the L2-normalised center embedding c of each sample, temperature t:
  * regions: the ground truth is downsampled to stride 4 (area, >= 0.5); positives are the mask *eroded*,
    negatives the outside of the mask *dilated* (max-pool morphology); the band between them, the object
    boundary where stride-4 pixels mix both sides, is ambiguous and takes no part.
  * pixel term, per sample: InfoNCE of every positive pixel against all negatives, anchored on c:
    -log(exp(c.z_p/t) / (exp(c.z_p/t) + sum_n exp(c.z_n/t))) = softplus(logsumexp_n(c.z_n/t) - c.z_p/t),
    averaged over the positives, then over the samples that have any.
  * instance term, per batch: symmetric InfoNCE between each sample's c and the normalised mean of its
    positive pixels' z, the other samples of the batch as negatives (other objects of the same image are
    the hardest ones). Samples without positives take no part.
  Empty masks give 0 (not NaN) and no gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_NEG = -1e4  # masked logits: exp(-1e4 - x) underflows to exactly 0, finite in fp16/bf16 too


def bce_loss(logits: list[torch.Tensor], target: torch.Tensor, pos_weight: float = 1.1) -> torch.Tensor:
    """Sum over the outputs of mean BCE; logits: list of (B, H, W) at the target's resolution (B, H, W)."""
    weight = torch.tensor(pos_weight, dtype=target.dtype, device=target.device)
    return sum(F.binary_cross_entropy_with_logits(lg, target, pos_weight=weight) for lg in logits)


def dice_loss(logits: list[torch.Tensor], target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Sum over the outputs of the mean soft Dice loss 1 - (2|P.G| + eps) / (|P| + |G| + eps) per sample.

    Ours (not in the release): BCE alone lets a small foreground collapse to "all background" early on a short
    CPU budget; Dice is insensitive to the foreground fraction (as in CRIS / ReLA-style RIS training).
    """
    g = target.flatten(1)
    total = 0.0
    for lg in logits:
        p = lg.sigmoid().flatten(1)
        total = total + (1 - (2 * (p * g).sum(1) + eps) / (p.sum(1) + g.sum(1) + eps)).mean()
    return total


def contrast_regions(target: torch.Tensor, size: tuple[int, int], erode: int = 1,
                     dilate: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative pixels at `size` (h, w) from a (B, H, W) {0, 1} target: (B, h, w) bool each.

    erode/dilate: radius in pixels at `size` (a (2r+1)x(2r+1) max-pool). Pixels in neither set form the
    ambiguous band. The image border counts as neither inside nor outside (max-pool pads with -inf).
    """
    mask = (F.interpolate(target[:, None].float(), size=size, mode="area") >= 0.5).float()  # (B, 1, h, w)
    eroded = 1.0 - F.max_pool2d(1.0 - mask, 2 * erode + 1, stride=1, padding=erode) if erode else mask
    dilated = F.max_pool2d(mask, 2 * dilate + 1, stride=1, padding=dilate) if dilate else mask
    return eroded[:, 0] > 0.5, dilated[:, 0] < 0.5


def instance_contrastive_loss(pixels: torch.Tensor, center: torch.Tensor, target: torch.Tensor,
                              temperature: torch.Tensor | float, erode: int = 1,
                              dilate: int = 1) -> dict[str, torch.Tensor]:
    """pixels (B, C, h, w) stride-4 embeddings; center (B, C) center embeddings; target (B, H, W) {0, 1}.

    Returns {"contrast_pixel", "contrast_instance"}, unweighted scalars.
    """
    b, c, h, w = pixels.shape
    pos, neg = contrast_regions(target, (h, w), erode, dilate)
    pos, neg = pos.flatten(1), neg.flatten(1)  # (B, hw)
    z = F.normalize(pixels.flatten(2), dim=1)  # (B, C, hw)
    anchor = F.normalize(center, dim=-1)  # (B, C)

    sim = torch.einsum("bc,bcn->bn", anchor, z) / temperature  # (B, hw)
    neg_lse = sim.masked_fill(~neg, _NEG).logsumexp(-1, keepdim=True)  # (B, 1)
    per_pixel = F.softplus(neg_lse - sim) * pos  # (B, hw), 0 outside the positives
    n_pos = pos.sum(-1)  # (B,)
    has_pos = (n_pos > 0).to(sim.dtype)
    per_sample = per_pixel.sum(-1) / n_pos.clamp_min(1)
    pixel_term = (per_sample * has_pos).sum() / has_pos.sum().clamp_min(1)

    proto = F.normalize(torch.einsum("bcn,bn->bc", z, pos.to(z.dtype)), dim=-1)  # (B, C), 0 if no positives
    logits = anchor @ proto.T / temperature  # (B, B): center i vs positives' mean j
    valid = has_pos.bool()
    pair = valid[:, None] & valid[None, :]
    logits = logits.masked_fill(~pair, _NEG)
    diag = torch.arange(b, device=pixels.device)
    ce = F.cross_entropy(logits, diag, reduction="none") + F.cross_entropy(logits.T, diag, reduction="none")
    instance_term = 0.5 * (ce * has_pos).sum() / has_pos.sum().clamp_min(1)
    return {"contrast_pixel": pixel_term, "contrast_instance": instance_term}


class InstanceContrastiveLoss(nn.Module):
    """The contrastive loss with its learnable parts: a projection of the final query state to mask_dim (the
    center embedding compared with the pixels) and the temperature, log-parameterised, clamped to
    [min_temperature, max_temperature], initialised at 0.07."""

    def __init__(self, query_dim: int, mask_dim: int, temperature: float = 0.07, erode: int = 1,
                 dilate: int = 1, min_temperature: float = 0.01, max_temperature: float = 1.0):
        super().__init__()
        self.proj = nn.Linear(query_dim, mask_dim)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))
        self.erode, self.dilate = erode, dilate
        self.log_bounds = (math.log(min_temperature), math.log(max_temperature))

    def temperature(self) -> torch.Tensor:
        return self.log_temperature.clamp(*self.log_bounds).exp()

    def forward(self, pixels: torch.Tensor, query: torch.Tensor,
                target: torch.Tensor) -> dict[str, torch.Tensor]:
        """pixels (B, mask_dim, h, w); query (B, query_dim) final query state; target (B, H, W)."""
        return instance_contrastive_loss(pixels, self.proj(query), target, self.temperature(),
                                         self.erode, self.dilate)
