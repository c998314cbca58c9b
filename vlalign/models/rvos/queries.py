"""Per-object query decoder for the two-stream model (ours; `query_decoder=True`; the paper's decoder is not public).

Why: trained with one mask head, the model segments *every* object of the named appearance ("the square
sliding to the right" with three identical squares gets all three). Picking one object out of several that
look alike is a conjunction -- this appearance *and* this motion or place -- and query decoders solve it by
making objects the unit: each query segments one object over the whole clip, and a score says whether that
object is the one the sentence means (cf. ReferFormer, Wu et al. 2022, whose query-per-object design this
follows; the trajectory input of the score is ours).

    memory  = neck map at stride 16 + embed(x, y, t)         (B, T*hm*wm, d)   the clip, every frame
    q_0     = query_n + W s                                  (B, N, d)         N object queries, language-led
    q_l     = FFN(SelfAttn(CrossAttn(q_{l-1}, memory)))      (B, N, d)         post-norm, as in DETR
    kernel  = MLP(q_L)                                       (B, N, d)
    m_nt    = <kernel_n, P_t> + bias                         (B, N, T, h, w)   P = the FPN's stride-4 map (FiLM'd)
    desc_n  = [mean x, y, log area; slopes of x, y, log area over the clip; consecutive-frame soft IoU;
               mean R, G, B] of sigmoid(m_n), detached      (B, N, 10)        where it is, how it moves, its colour
    pool_n  = sum sigmoid(m_n) P0 / sum sigmoid(m_n)         (B, N, d)         P0 = P before the sentence's FiLM
    score_n = <MLP([LN(embed(desc_n)); LN(pool_n)]), W' u>/sqrt(d) + b (B, N)  does the sentence mean object n?
              u = the text encoder's mean word without vision guidance (`TwoStreamRVOS.plain_sentence`)

The score reads the object's measured trajectory, so "moving to the left" (x slope < 0), "at the top" (mean
y), "that grows" (area slope > 0) and "spinning" (centroid still, frame-to-frame IoU < 1) are single numbers
the sentence can be compared with; the descriptor is detached so that the masks are shaped by the mask losses
alone. The score is a dot product with the sentence, since "this object fits this sentence" is a product of
the two. Training (the model's forward): every annotated object of the clip is matched to one query (Hungarian,
mask cost), its mask supervised; the queries no object took are pushed to empty masks; the query matched to
the referred object is the score's only positive (`loss_score`). With `query_aux_head` the single-mask
referring head stays beside the queries with its own BCE + Dice, an auxiliary loss: the instance losses ignore
the sentence, and that head's loss keeps the features referring-aware. Prediction: the best-scoring query.

The selection loss (`select_weight`, `selection_loss`): the score is a function of a soft mask, a map and a
sentence -- not of the query's embedding -- so it also applies to the clip's *true* objects, and it is
trained there to choose, by cross-entropy, the object each sentence of the video means: the clip's own
sentence and up to 8 more (`ReferringClips`' `selection_texts`). That is why it reads an unguided sentence and
the map before FiLM: one clip's visual pass then serves every sentence of its video. The same rows are also
scored among the queries the matching gave an object, on the queries' own masks, since those are what it
ranks at test time (on true masks alone it chose well there, less so among the queries: README, version 7).
What it fixes (versions 4-6 in benchmarks/README.md, Video): trained only through the queries, on masks that
are still blurred and a matching that changes every step, the score stayed near chance; on the true masks with
the clip's own sentence alone it learned nothing in 650 steps either (it needs thousands of sentence-clip
pairs).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from vlalign.models.alignformer.losses import bce_loss, dice_loss

__all__ = ["QueryDecoder", "descriptor", "match_objects", "object_masks", "query_losses", "selection_loss",
           "trajectory"]

TRAJECTORY_DIM = 7
DESCRIPTOR_DIM = TRAJECTORY_DIM + 3  # + the mean colour


def trajectory(probs: torch.Tensor) -> torch.Tensor:
    """Soft masks (..., T, h, w) in [0, 1] -> (..., 7) descriptors (see the module docstring).

    Coordinates are cell centres in [-1, 1]; area is the fraction of the frame; slopes are least-squares slopes
    per clip (t in [-1, 1]; 0 when T = 1); the soft IoU of consecutive frames is sum(min) / sum(max) (1 when T = 1).
    """
    t, h, w = probs.shape[-3:]
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=probs.device, dtype=probs.dtype)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=probs.device, dtype=probs.dtype)
    mass = probs.sum((-2, -1)).clamp_min(1e-6)  # (..., T)
    cx = (probs.sum(-2) * xs).sum(-1) / mass
    cy = (probs.sum(-1) * ys).sum(-1) / mass
    area = torch.log(mass / (h * w) + 1e-4)
    ts = torch.linspace(-1, 1, t, device=probs.device, dtype=probs.dtype) if t > 1 else probs.new_zeros(1)
    denom = (ts**2).sum().clamp_min(1e-6)

    def slope(v: torch.Tensor) -> torch.Tensor:
        return ((v - v.mean(-1, keepdim=True)) * ts).sum(-1) / denom

    if t > 1:
        a, b = probs[..., :-1, :, :], probs[..., 1:, :, :]
        iou = (torch.minimum(a, b).sum((-2, -1)) / torch.maximum(a, b).sum((-2, -1)).clamp_min(1e-6)).mean(-1)
    else:
        iou = probs.new_ones(probs.shape[:-3])
    return torch.stack([cx.mean(-1), cy.mean(-1), area.mean(-1), slope(cx), slope(cy), slope(area), iou], -1)


def descriptor(probs: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
    """Soft masks (B, K, T, h, w) and the clip's frames (B, T, 3, h, w) in [0, 1] -> (B, K, 10): the trajectory
    and the mean colour under each mask (0.5 grey where a mask is empty), brought to unit-order values.

    Why the scaling (ours): raw, the slopes that tell the motions apart are tiny (standard deviation 0.04-0.07
    on the synthetic set's true objects, against 0.4-0.6 for the position and log area), and the score's MLP
    learned nothing from them in 220 steps. Slopes of x and y are given in stride-4 cells (x w/2, x h/2), the
    log-area slope x 10, the log area shifted by 4 (a few percent of the frame), colour centred on grey."""
    h, w = probs.shape[-2:]
    mass = probs.sum((2, 3, 4))[..., None]  # (B, K, 1)
    colour = (torch.einsum("bkthw,btchw->bkc", probs, rgb) + 0.5 * 1e-3) / (mass + 1e-3)
    scale = probs.new_tensor([1, 1, 1, w / 2, h / 2, 10, 1])
    shift = probs.new_tensor([0, 0, 4, 0, 0, 0, 0])
    return torch.cat([(trajectory(probs) + shift) * scale, colour - 0.5], -1)


class _Layer(nn.Module):
    """Cross-attention to the clip, self-attention among the queries, FFN; post-norm residuals."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.cross = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(inplace=True), nn.Linear(4 * dim, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))

    def forward(self, q: torch.Tensor, pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor):
        q = self.norms[0](q + self.cross(q + pos, memory + memory_pos, memory, need_weights=False)[0])
        q = self.norms[1](q + self.self_attn(q + pos, q + pos, q, need_weights=False)[0])
        return self.norms[2](q + self.ffn(q))


def _mlp(cin: int, hidden: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, cout))


class QueryDecoder(nn.Module):
    """pixels (B, T, d, h, w) stride-4 map, memory (B, T, d, hm, wm), sentence (B, lang_dim) ->
    mask logits (B, N, T, h, w) and score logits (B, N)."""

    def __init__(self, dim: int, lang_dim: int, num_queries: int = 6, layers: int = 2, heads: int = 4,
                 prior: float = 0.1):
        super().__init__()
        self.query = nn.Embedding(num_queries, dim)
        self.query_pos = nn.Embedding(num_queries, dim)
        self.language = nn.Linear(lang_dim, dim)
        self.position = nn.Linear(3, dim)  # (x, y, t) of a memory cell
        self.layers = nn.ModuleList(_Layer(dim, heads) for _ in range(layers))
        self.kernel = _mlp(dim, dim, dim)
        self.mask_bias = nn.Parameter(torch.tensor(math.log(prior / (1 - prior))))
        self.trajectory = _mlp(DESCRIPTOR_DIM, dim, dim)
        self.score_language = nn.Linear(lang_dim, dim)
        # both halves of the score's input layer-normed: raw, the pooled pixels' norm (~11) drowned the
        # descriptor's embedding (~1) and the score learned nothing from the trajectory (measured)
        self.score_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(2))
        self.score_object = _mlp(2 * dim, dim, dim)
        self.score_bias = nn.Parameter(torch.tensor(math.log(1 / max(num_queries - 1, 1))))  # 1 in N positive

    def forward(self, pixels: torch.Tensor, memory: torch.Tensor, sentence: torch.Tensor,
                rgb: torch.Tensor | None = None, base: torch.Tensor | None = None,
                score_sentence: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """rgb (B, T, 3, h, w): the clip's frames at the pixels' resolution (the colour descriptor; None = grey);
        base (B, T, d, h, w): the map the score pools (default: pixels); score_sentence (B, lang_dim): the
        sentence the score reads (default: sentence)."""
        b, t, d, hm, wm = memory.shape
        ts = torch.linspace(-1, 1, t, device=memory.device) if t > 1 else memory.new_zeros(1)
        ys = torch.linspace(-1 + 1 / hm, 1 - 1 / hm, hm, device=memory.device)
        xs = torch.linspace(-1 + 1 / wm, 1 - 1 / wm, wm, device=memory.device)
        grid = torch.stack(torch.meshgrid(ts, ys, xs, indexing="ij")[::-1], -1).reshape(1, t * hm * wm, 3)
        memory_pos = self.position(grid.to(memory.dtype))
        memory = memory.permute(0, 1, 3, 4, 2).reshape(b, t * hm * wm, d)
        lang = self.language(sentence).to(memory.dtype)[:, None]  # (B, 1, d)
        q = self.query.weight[None].to(memory.dtype) + lang
        pos = self.query_pos.weight[None].to(memory.dtype).expand(b, -1, -1)
        for layer in self.layers:
            q = layer(q, pos, memory, memory_pos)
        masks = torch.einsum("bnd,btdhw->bnthw", self.kernel(q), pixels) + self.mask_bias
        probs = masks.detach().float().sigmoid()
        return masks, self.score(probs, pixels if base is None else base,
                                 sentence if score_sentence is None else score_sentence, rgb)

    def score(self, probs: torch.Tensor, pixels: torch.Tensor, sentence: torch.Tensor,
              rgb: torch.Tensor | None = None) -> torch.Tensor:
        """Soft masks (B, K, T, h, w) in [0, 1] of any K objects (the queries', or the ground truth's in
        training), the map to pool (B, T, d, h, w), the sentence (B, lang_dim) -> score logits (B, K): one
        function for both kinds of masks, so the selection loss on true objects trains the queries' ranking."""
        if rgb is None:
            rgb = pixels.new_full((pixels.shape[0], pixels.shape[1], 3, *pixels.shape[-2:]), 0.5)
        traj = self.trajectory(descriptor(probs, rgb.float()).to(pixels.dtype))
        weights = (probs / probs.sum((2, 3, 4), keepdim=True).clamp_min(1e-6)).to(pixels.dtype)
        pooled = torch.einsum("bnthw,btdhw->bnd", weights, pixels)
        obj = self.score_object(torch.cat([self.score_norms[0](traj), self.score_norms[1](pooled)], -1))
        lang = self.score_language(sentence).to(obj.dtype)[:, :, None]  # (B, d, 1)
        return (obj @ lang).squeeze(-1) / math.sqrt(obj.shape[-1]) + self.score_bias


def _pairwise_cost(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """logits (N, P), targets (K, P) in [0, 1] -> (N, K) mean BCE + soft Dice of every query against every object."""
    p = logits.sigmoid()
    bce = (F.softplus(logits).sum(1, keepdim=True) - logits @ targets.T) / logits.shape[1]
    dice = 1 - (2 * p @ targets.T + eps) / (p.sum(1, keepdim=True) + targets.sum(1)[None] + eps)
    return bce + dice


def match_objects(masks: torch.Tensor, scores: torch.Tensor, objects: torch.Tensor, keep: torch.Tensor,
                  score_cost: float = 0.0) -> list[tuple[list[int], list[int]]]:
    """Hungarian matching of one clip's queries to its objects (no gradient).

    masks (N, T, h, w) logits; scores (N,); objects (T, H, W) ids, 1 = the referred object, 0 = none;
    keep (T,) bool annotated frames. Returns (queries, object ids), the referred object first when present.
    Cost: mean BCE + Dice at the masks' resolution (objects area-resized), minus `score_cost` x p(score) for
    the referred object (0 by default: with 2, the score and the matching agreed on one fixed query for every
    sentence, which then hedged between the candidates; measured in benchmarks/README.md). With more objects
    than queries, the referred one and the lowest ids are kept.
    """
    n, _, h, w = masks.shape
    frames = objects[keep]
    ids = [int(i) for i in torch.unique(frames) if i > 0][:n]
    if not ids:
        return [], []
    onehot = (frames[None] == torch.tensor(ids, device=frames.device)[:, None, None, None]).float()
    small = F.interpolate(onehot, size=(h, w), mode="area").flatten(1)  # (K, T_valid*h*w)
    cost = _pairwise_cost(masks[:, keep].flatten(1).float(), small)
    if ids[0] == 1:
        cost[:, 0] -= score_cost * scores.float().sigmoid()
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    order = sorted(range(len(rows)), key=lambda j: ids[cols[j]])
    return [int(rows[j]) for j in order], [ids[cols[j]] for j in order]


def object_masks(objects: torch.Tensor, keep: torch.Tensor, size: tuple[int, int],
                 max_objects: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The clip's true objects as soft masks for the score: objects (B, T, H, W) ids (1 = the referred one),
    keep (B, T) -> masks (B, K, T, h, w) area-resized to `size` and present (B, K) bool, K = max_objects, the
    referred object at index 0 and the others by id. A clip with an unannotated frame gets no object (its
    trajectory would be wrong on that frame), nor one whose referred object is absent."""
    b, t = objects.shape[:2]
    masks = objects.new_zeros((b, max_objects, t, *size), dtype=torch.float32)
    present = torch.zeros(b, max_objects, dtype=torch.bool, device=objects.device)
    for i in range(b):
        if not bool(keep[i].all()):
            continue
        ids = [int(k) for k in torch.unique(objects[i]) if k > 0]
        if 1 not in ids:
            continue
        ids = [1] + [k for k in ids if k != 1][: max_objects - 1]
        onehot = (objects[i][None] == torch.tensor(ids, device=objects.device)[:, None, None, None]).float()
        masks[i, : len(ids)] = F.interpolate(onehot, size=size, mode="area")
        present[i, : len(ids)] = True
    return masks, present


def selection_loss(scores: torch.Tensor, present: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of picking each row's `target` object (default 0, the referred one) among its present
    objects: scores and present (P, K), target (P,) long; the mean over rows with two or more objects whose
    target is present (0, in the graph, when there is none)."""
    if target is None:
        target = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    rows = torch.arange(scores.shape[0], device=scores.device)
    many = (present.sum(1) >= 2) & present[rows, target]
    if not bool(many.any()):
        return scores.sum() * 0
    logits = scores[many].masked_fill(~present[many], float("-inf"))
    return F.cross_entropy(logits, target[many])


def query_losses(masks: torch.Tensor, scores: torch.Tensor, objects: torch.Tensor, keep: torch.Tensor,
                 size: tuple[int, int], pos_weight: float = 1.0,
                 score_cost: float = 0.0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """masks (B, N, T, h, w), scores (B, N), objects (B, T, H, W), keep (B, T) -> unweighted losses and the
    (B, N) object number each query was matched to (1 = the referred object, 0 = none).

    loss_bce / loss_dice: the referred object's query against its mask, over annotated frames at (H, W);
    loss_instance: the same for the other objects (mean over them), plus the BCE of every unmatched query's
    mask against an empty one (at the masks' resolution); loss_score: BCE of every score, 1 for the referred
    object's query and 0 for the rest.

    Why the empty masks: an unsupervised query is free to copy a matched one, and two queries with the same
    mask, one labelled 1 and one 0, leave the score nothing to learn (measured: it stayed at the 1-in-N prior).
    """
    b, n = scores.shape
    owner = torch.zeros(b, n, dtype=torch.long)
    chosen, others, other_targets = [], [], []
    labels = torch.zeros_like(scores)
    unmatched = keep[:, None, :].expand(b, n, -1).clone()  # (B, N, T): frames of queries that no object took
    with torch.no_grad():
        pairs = [match_objects(masks[i], scores[i], objects[i], keep[i], score_cost) for i in range(b)]
    for i, (queries, ids) in enumerate(pairs):
        unmatched[i, queries] = False
        owner[i, queries] = torch.tensor(ids, dtype=torch.long)
        for q, k in zip(queries, ids):
            up = F.interpolate(masks[i, q, keep[i]][None], size=size, mode="bilinear", align_corners=False)[0]
            target = (objects[i, keep[i]] == k).to(up.dtype)
            if k == 1:
                labels[i, q] = 1.0
                chosen.append((up, target))
            else:
                others.append(up)
                other_targets.append(target)
    zero = masks.sum() * 0

    def pair_loss(logits: list[torch.Tensor], targets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if not logits:
            return zero, zero
        lg, tg = torch.cat(logits), torch.cat(targets)
        return bce_loss([lg], tg, pos_weight), dice_loss([lg], tg)

    bce, dice = pair_loss([c[0] for c in chosen], [c[1] for c in chosen])
    inst_bce, inst_dice = pair_loss(others, other_targets)
    spare = masks[unmatched]  # (n_frames, h, w)
    empty = F.binary_cross_entropy_with_logits(spare, torch.zeros_like(spare)) if spare.numel() else zero
    losses = {"loss_bce": bce, "loss_dice": dice, "loss_instance": inst_bce + inst_dice + empty,
              "loss_score": F.binary_cross_entropy_with_logits(scores, labels)}
    return losses, owner.to(scores.device)
