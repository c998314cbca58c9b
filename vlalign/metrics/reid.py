"""Visible-infrared re-identification metrics: CMC, mAP and mINP, vectorised across queries.

The three functions keep the signatures of the widely used AGW code (mangye16/Cross-Modal-Re-ID-baseline
`eval_metrics.py`, also in DDAG, CAJ, DEEN), so they can be swapped in. `distmat` is a *distance*: smaller is
closer (callers pass `-(q @ g.T)` for cosine similarity). For every query the gallery is ranked, some entries
are removed (the protocol's rule below), and on the kept ranked list:

    AP   = mean over true matches of (#matches up to it) / (its rank)
    INP  = (#true matches) / (rank of the hardest, i.e. last, true match)      (Ye et al., TPAMI 2021)
    CMC  = [first true match within rank k] for k = 1..min(max_rank, num_gallery)

mAP, mINP and CMC are averaged over the queries that have at least one true match among the kept entries;
the others are skipped, as in AGW (its unique-identity CMC adds zeros for them and divides by the valid
count, which is the same). If no query is left, ValueError.

- `eval_sysu`: removes gallery cam 2 for queries from cam 3; CMC over unique gallery identities in rank
  order (AGW's returned `new_all_cmc`; the official SYSU-MM01 `get_cmc_multi_cam.m`).
- `eval_regdb`: removes nothing; CMC over gallery images (AGW `eval_regdb`).
- `eval_llcm`: removes gallery entries of the query's identity *and* camera; CMC over unique gallery
  identities (DEEN `eval_llcm`).

SYSU's cam-2 rule ignores identity: cameras 2 and 3 share a location (official `cam_id = [1 2 2 4 5 6]`).
AP is always computed on the kept list *before* identities are de-duplicated (AGW and the official
`get_map_multi_cam.m` agree on this).

Where we depart from the AGW code, only on inputs it does not handle:
- ties are ranked by gallery index (stable sort, as Matlab's `sort`); numpy's default quicksort leaves their
  order unspecified, so tied distances may give AGW slightly different numbers;
- when a query keeps fewer entries (or unique identities) than the CMC length, its curve is padded with its
  last value (AGW would build a ragged array and fail).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["eval_llcm", "eval_regdb", "eval_sysu"]

# Queries are processed in blocks of about this many (query, gallery) pairs, to bound memory (a few int64
# arrays of the block's size) on large problems such as Market-1501-sized galleries.
_BLOCK_PAIRS = 4_000_000

# removed(order, rows, match) -> QbxG bool: True where the ranked gallery entry is removed for that query.
RemoveRule = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def eval_sysu(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 20,
) -> tuple[np.ndarray, float, float]:
    """SYSU-MM01: (cmc, mAP, mINP) with the cam-3/cam-2 rule and unique-identity CMC.

    distmat QxG distances; q_pids, q_camids (Q,); g_pids, g_camids (G,). cmc is float32 (min(max_rank, G),).
    """
    q_pids, g_pids, q_camids, g_camids = _check(distmat, q_pids, g_pids, q_camids, g_camids, max_rank)

    def removed(order: np.ndarray, rows: np.ndarray, match: np.ndarray) -> np.ndarray:
        return (q_camids[rows] == 3)[:, None] & (g_camids[order] == 2)

    return _evaluate(distmat, q_pids, g_pids, removed, unique_ids=True, max_rank=max_rank)


def eval_regdb(
    distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, max_rank: int = 20
) -> tuple[np.ndarray, float, float]:
    """RegDB: (cmc, mAP, mINP) with nothing removed and per-image CMC. distmat QxG; q_pids (Q,); g_pids (G,)."""
    q_pids, g_pids, _, _ = _check(distmat, q_pids, g_pids, None, None, max_rank)

    def removed(order: np.ndarray, rows: np.ndarray, match: np.ndarray) -> np.ndarray:
        return np.zeros(order.shape, dtype=bool)

    return _evaluate(distmat, q_pids, g_pids, removed, unique_ids=False, max_rank=max_rank)


def eval_llcm(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 20,
) -> tuple[np.ndarray, float, float]:
    """LLCM: (cmc, mAP, mINP) removing same identity + same camera, unique-identity CMC (DEEN `eval_llcm`)."""
    q_pids, g_pids, q_camids, g_camids = _check(distmat, q_pids, g_pids, q_camids, g_camids, max_rank)

    def removed(order: np.ndarray, rows: np.ndarray, match: np.ndarray) -> np.ndarray:
        return match & (g_camids[order] == q_camids[rows][:, None])

    return _evaluate(distmat, q_pids, g_pids, removed, unique_ids=True, max_rank=max_rank)


def _check(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    if not isinstance(distmat, np.ndarray) or distmat.ndim != 2:
        raise ValueError(
            f"distmat must be a 2-D numpy array (queries x gallery), got {type(distmat).__name__} "
            f"with shape {getattr(distmat, 'shape', None)}"
        )
    num_q, num_g = distmat.shape
    if num_q == 0 or num_g == 0:
        raise ValueError(f"distmat is empty ({num_q} queries x {num_g} gallery entries)")
    if np.isnan(distmat).any():
        raise ValueError("distmat contains NaN; its ranking would be undefined")
    if int(max_rank) < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    out = []
    for name, values, size in (
        ("q_pids", q_pids, num_q),
        ("g_pids", g_pids, num_g),
        ("q_camids", q_camids, num_q),
        ("g_camids", g_camids, num_g),
    ):
        if values is None:
            out.append(None)
            continue
        values = np.asarray(values).reshape(-1)
        if values.shape[0] != size:
            raise ValueError(f"{name} has {values.shape[0]} entries but distmat is {num_q}x{num_g} (expected {size})")
        out.append(values)
    return tuple(out)


def _first_occurrences(ranked_ids: np.ndarray, keep: np.ndarray, sentinel: int) -> np.ndarray:
    """QbxG bool: True at the first *kept* position of each identity in every ranked row.

    ranked_ids holds dense identity indices in [0, sentinel). A stable sort by identity keeps each identity's
    positions in rank order, so the first of every run is that identity's first occurrence.
    """
    ids = np.where(keep, ranked_ids, sentinel)  # removed entries form one group that is never "first"
    by_id = np.argsort(ids, axis=1, kind="stable")
    sorted_ids = np.take_along_axis(ids, by_id, axis=1)
    starts = np.ones(sorted_ids.shape, dtype=bool)
    starts[:, 1:] = sorted_ids[:, 1:] != sorted_ids[:, :-1]
    starts &= sorted_ids != sentinel
    first = np.zeros(ids.shape, dtype=bool)
    np.put_along_axis(first, by_id, starts, axis=1)
    return first


def _evaluate(distmat, q_pids, g_pids, removed: RemoveRule, unique_ids: bool, max_rank: int):
    num_q, num_g = distmat.shape
    length = min(int(max_rank), num_g)
    ks = np.arange(1, length + 1)
    g_dense = np.unique(g_pids, return_inverse=True)[1].reshape(-1)  # identities as 0..P-1
    sentinel = int(g_dense.max()) + 1
    cmc_hits = np.zeros(length, dtype=np.int64)
    ap_sum = inp_sum = 0.0
    num_valid = 0
    block = max(1, _BLOCK_PAIRS // num_g)
    for start in range(0, num_q, block):
        rows = np.arange(start, min(start + block, num_q))
        order = np.argsort(distmat[rows], axis=1, kind="stable")  # (Qb, G) gallery indices, closest first
        match = g_pids[order] == q_pids[rows][:, None]  # (Qb, G)
        keep = ~removed(order, rows, match)
        pos = match & keep
        num_pos = pos.sum(axis=1)
        valid = num_pos > 0
        if not valid.any():
            continue
        order, keep, pos, num_pos = order[valid], keep[valid], pos[valid], num_pos[valid]
        rank = np.cumsum(keep, axis=1)  # 1-based rank in the kept list (meaningful where keep)
        hits = np.cumsum(pos, axis=1)  # true matches up to and including each position
        ap_sum += float((np.where(pos, hits / np.maximum(rank, 1), 0.0).sum(axis=1) / num_pos).sum())
        last_rank = np.where(pos, rank, 0).max(axis=1)
        inp_sum += float((num_pos / last_rank).sum())
        first = np.argmax(pos, axis=1)  # column of the first kept true match
        if unique_ids:  # rank among the distinct identities met so far: the match's own identity is one
            distinct = np.cumsum(_first_occurrences(g_dense[order], keep, sentinel), axis=1)
            first_rank = distinct[np.arange(len(first)), first]
        else:
            first_rank = rank[np.arange(len(first)), first]
        # a curve shorter than `length` is padded with its last value: here first_rank <= k stays true
        cmc_hits += (first_rank[:, None] <= ks[None, :]).sum(axis=0)
        num_valid += int(valid.sum())
    if num_valid == 0:
        raise ValueError(
            f"no query has a true match in the gallery ({num_q} queries, {num_g} gallery entries, after the "
            "protocol's removals): check that query and gallery identities overlap"
        )
    cmc = (cmc_hits / num_valid).astype(np.float32)
    return cmc, ap_sum / num_valid, inp_sum / num_valid
