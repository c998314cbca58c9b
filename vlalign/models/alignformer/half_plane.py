"""Half-plane context (ours, an option of the pixel decoder): every pixel learns how much of something lies
beyond it in eight directions.

"The leftmost square", "the second circle from the left", "the star above the red heart": each asks, for a
pixel of a candidate, how many candidates (or landmarks) lie on one side of it. Attention can only
approximate that count, and deformable attention only near the pixel. Here the map itself counts:

    g = sigmoid(conv1x1(x))                         (B, k, h, w)  what to count, k channels
    S_d(p) = sum over pixels q beyond p along d of g(q)   d in {left, right, up, down, 4 diagonals}
    x <- x + linear([log1p S_d, log1p total])       (zero-initialised: the layer starts as the identity)

"Beyond" is strict: q's projection on the direction d exceeds p's (the columns right of p for "right", the
anti-diagonals x+y beyond p's for "bottom right"). Each projection takes one scatter-add into bins, one
cumulative sum and one gather: O(h*w) per channel, no Python loop over pixels.
"""

from __future__ import annotations

import torch
from torch import nn

# pixel -> bin along each of the four axes: x, y, x + y, x - y; each gives two opposite directions
_AXES = 4


def _bins(h: int, w: int, device=None) -> tuple[torch.Tensor, list[int]]:
    """(4, h*w) long bin index of every pixel along x, y, x+y and x-y, and the number of bins of each."""
    y, x = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    x, y = x.flatten(), y.flatten()
    idx = torch.stack([x, y, x + y, x - y + (h - 1)])
    return idx, [w, h, h + w - 1, h + w - 1]


def half_plane_sums(g: torch.Tensor) -> torch.Tensor:
    """g (B, k, h, w) >= 0 -> (B, k, 8, h, w): the mass strictly beyond each pixel in the directions
    +x, -x, +y, -y, +(x+y), -(x+y), +(x-y), -(x-y) (right, left, down, up, bottom right, top left, right-up,
    left-down)."""
    b, k, h, w = g.shape
    idx, sizes = _bins(h, w, g.device)
    flat = g.flatten(2)  # (B, k, hw)
    out = []
    for a in range(_AXES):
        index = idx[a].expand(b, k, -1)
        mass = flat.new_zeros(b, k, sizes[a]).scatter_add_(2, index, flat)  # (B, k, bins)
        upto = mass.cumsum(2)  # inclusive, from the low end
        below = (upto - mass).gather(2, index)  # strictly lower bins
        above = (upto[..., -1:] - upto).gather(2, index)  # strictly higher bins
        out += [above, below]
    return torch.stack(out, 2).unflatten(-1, (h, w))


class HalfPlaneContext(nn.Module):
    """x (B, dim, h, w) -> x + linear(log1p of the half-plane sums of k learned maps and their totals)."""

    def __init__(self, dim: int, channels: int = 8):
        super().__init__()
        self.gate = nn.Conv2d(dim, channels, 1)
        self.out = nn.Linear(channels * (2 * _AXES + 1), dim)
        nn.init.zeros_(self.out.weight)  # the identity at first: the pretrained path is undisturbed
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.gate(x))  # (B, k, h, w)
        sums = half_plane_sums(g).flatten(1, 2)  # (B, 8k, h, w)
        total = g.sum((-2, -1), keepdim=True).expand_as(g)  # (B, k, h, w)
        feats = torch.log1p(torch.cat([sums, total], 1))  # counts span 0..h*w: the log keeps them comparable
        return x + self.out(feats.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
