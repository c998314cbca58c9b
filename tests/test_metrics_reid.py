"""VI-ReID metrics against hand-computed cases and a plain per-query reference written here."""

from __future__ import annotations

import numpy as np
import pytest

from vlalign.metrics.reid import eval_llcm, eval_regdb, eval_sysu


def reference(distmat, q_pids, g_pids, q_cams, g_cams, rule, unique_ids, max_rank=20):
    """One query at a time, as the protocol reads: rank, remove, de-duplicate, score."""
    length = min(max_rank, distmat.shape[1])
    curves, aps, inps = [], [], []
    for i in range(distmat.shape[0]):
        order = sorted(range(distmat.shape[1]), key=lambda j: distmat[i, j])
        if rule == "sysu":
            order = [j for j in order if not (q_cams[i] == 3 and g_cams[j] == 2)]
        elif rule == "llcm":
            order = [j for j in order if not (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])]
        ranked = [g_pids[j] for j in order]
        ranks = [r + 1 for r, pid in enumerate(ranked) if pid == q_pids[i]]
        if not ranks:
            continue
        aps.append(np.mean([(n + 1) / r for n, r in enumerate(ranks)]))
        inps.append(len(ranks) / ranks[-1])
        if unique_ids:
            seen = []
            for pid in ranked:
                if pid not in seen:
                    seen.append(pid)
            first = seen.index(q_pids[i]) + 1
        else:
            first = ranks[0]
        curves.append([1.0 if first <= k else 0.0 for k in range(1, length + 1)])
    return np.mean(curves, axis=0), float(np.mean(aps)), float(np.mean(inps))


def _random_problem(rng, num_q, num_g, num_ids, q_cams, g_cams):
    distmat = rng.random((num_q, num_g))  # continuous: ties have probability 0
    q_pids = rng.integers(0, num_ids + 2, num_q)  # some query identities are absent from the gallery
    g_pids = rng.integers(0, num_ids, num_g)
    return distmat, q_pids, g_pids, rng.choice(q_cams, num_q), rng.choice(g_cams, num_g)


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_reference_on_random_problems(seed):
    rng = np.random.default_rng(seed)
    num_g = int(rng.integers(8, 60))
    max_rank = int(rng.integers(1, 25))
    num_ids = int(rng.integers(3, 25))  # few identities: the unique-identity curve gets padded
    d, qp, gp, qc, gc = _random_problem(rng, 40, num_g, num_ids, [3, 6], [1, 2, 4, 5])
    for got, want in [
        (eval_sysu(d, qp, gp, qc, gc, max_rank), reference(d, qp, gp, qc, gc, "sysu", True, max_rank)),
        (eval_regdb(d, qp, gp, max_rank), reference(d, qp, gp, qc, gc, "none", False, max_rank)),
    ]:
        np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
        assert got[1] == pytest.approx(want[1]) and got[2] == pytest.approx(want[2])
    d, qp, gp, qc, gc = _random_problem(rng, 40, num_g, num_ids, range(1, 10), range(1, 10))
    got, want = eval_llcm(d, qp, gp, qc, gc, max_rank), reference(d, qp, gp, qc, gc, "llcm", True, max_rank)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    assert got[1] == pytest.approx(want[1]) and got[2] == pytest.approx(want[2])


def test_blocks_over_queries_give_the_same_numbers(monkeypatch):
    rng = np.random.default_rng(7)
    d, qp, gp, qc, gc = _random_problem(rng, 37, 30, 8, [3, 6], [1, 2, 4, 5])
    whole = eval_sysu(d, qp, gp, qc, gc)
    monkeypatch.setattr("vlalign.metrics.reid._BLOCK_PAIRS", 100)  # blocks of 3 queries
    blocked = eval_sysu(d, qp, gp, qc, gc)
    np.testing.assert_array_equal(whole[0], blocked[0])
    assert whole[1:] == pytest.approx(blocked[1:])


def test_unique_identity_cmc_by_hand():
    # One query, identity 1 from cam 6. Ranked gallery identities: 2, 2, 3, 1.
    # Unique identities in rank order: 2, 3, 1 -> the match is at identity-rank 3 (image-rank 4).
    d = np.array([[0.1, 0.2, 0.3, 0.4]])
    q, g = np.array([1]), np.array([2, 2, 3, 1])
    cmc, ap, inp = eval_sysu(d, q, g, np.array([6]), np.array([1, 4, 5, 1]), max_rank=4)
    np.testing.assert_array_equal(cmc, [0, 0, 1, 1])
    assert ap == pytest.approx(1 / 4) and inp == pytest.approx(1 / 4)
    cmc, ap, inp = eval_regdb(d, q, g, max_rank=4)
    np.testing.assert_array_equal(cmc, [0, 0, 0, 1])
    assert ap == pytest.approx(1 / 4) and inp == pytest.approx(1 / 4)
    assert cmc.dtype == np.float32 and cmc.shape == (4,)


def test_camera_3_ignores_gallery_camera_2_whatever_the_identity():
    # gallery: (id 1, cam 2) d=.1, (id 5, cam 2) d=.15, (id 2, cam 1) d=.2, (id 1, cam 1) d=.3
    d = np.array([[0.1, 0.15, 0.2, 0.3], [0.1, 0.15, 0.2, 0.3]])
    q_pids, q_cams = np.array([1, 1]), np.array([3, 6])
    g_pids, g_cams = np.array([1, 5, 2, 1]), np.array([2, 2, 1, 1])
    # cam 3 keeps [2, 1]: CMC [0, 1, 1], AP = 1/2, INP = 1/2
    cmc, ap, inp = eval_sysu(d[:1], q_pids[:1], g_pids, q_cams[:1], g_cams, max_rank=3)
    np.testing.assert_array_equal(cmc, [0, 1, 1])
    assert ap == pytest.approx(1 / 2) and inp == pytest.approx(1 / 2)
    # cam 6 keeps [1, 5, 2, 1]: CMC [1, 1, 1], AP = (1/1 + 2/4) / 2 = 3/4, INP = 2/4
    cmc, ap, inp = eval_sysu(d[1:], q_pids[1:], g_pids, q_cams[1:], g_cams, max_rank=3)
    np.testing.assert_array_equal(cmc, [1, 1, 1])
    assert ap == pytest.approx(3 / 4) and inp == pytest.approx(1 / 2)
    # both together: the means
    cmc, ap, inp = eval_sysu(d, q_pids, g_pids, q_cams, g_cams, max_rank=3)
    np.testing.assert_allclose(cmc, [0.5, 1, 1])
    assert ap == pytest.approx(5 / 8) and inp == pytest.approx(1 / 2)


def test_minp_and_ap_by_hand():
    # true matches at ranks 1, 3 and 5 of 6: INP = 3/5, AP = (1/1 + 2/3 + 3/5) / 3
    d = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    g = np.array([7, 8, 7, 9, 7, 8])
    cmc, ap, inp = eval_regdb(d, np.array([7]), g, max_rank=6)
    assert inp == pytest.approx(3 / 5)
    assert ap == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    np.testing.assert_array_equal(cmc, [1] * 6)


def test_llcm_removes_same_identity_same_camera_only():
    # query id 1 cam 4; gallery (1, cam 4) d=.1 removed; (2, cam 4) d=.2 kept; (1, cam 5) d=.3 kept
    d = np.array([[0.1, 0.2, 0.3]])
    cmc, ap, inp = eval_llcm(d, np.array([1]), np.array([1, 2, 1]), np.array([4]), np.array([4, 4, 5]), 2)
    np.testing.assert_array_equal(cmc, [0, 1])
    assert ap == pytest.approx(1 / 2) and inp == pytest.approx(1 / 2)


def test_queries_without_a_true_match_are_skipped():
    d = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    g = np.array([2, 2, 3, 1])
    alone = eval_sysu(d[:1], np.array([1]), g, np.array([6]), np.array([1, 1, 1, 1]))
    both = eval_sysu(d, np.array([1, 9]), g, np.array([6, 6]), np.array([1, 1, 1, 1]))
    np.testing.assert_array_equal(alone[0], both[0])
    assert alone[1:] == both[1:]
    # a cam-3 query whose only match sits in cam 2 has no true match after the removal
    only_cam2 = eval_sysu(d, np.array([1, 1]), g, np.array([6, 3]), np.array([1, 1, 1, 2]))
    np.testing.assert_array_equal(only_cam2[0], alone[0])


def test_no_valid_query_is_a_clear_error():
    d = np.array([[0.1, 0.2]])
    with pytest.raises(ValueError, match="no query has a true match"):
        eval_regdb(d, np.array([5]), np.array([1, 2]))
    with pytest.raises(ValueError, match="no query has a true match"):
        eval_sysu(d, np.array([1]), np.array([1, 2]), np.array([3]), np.array([2, 1]))


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="g_pids has 3 entries"):
        eval_regdb(np.zeros((1, 2)), np.array([1]), np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="q_camids"):
        eval_sysu(np.zeros((2, 2)), np.array([1, 2]), np.array([1, 2]), np.array([3]), np.array([1, 2]))
    with pytest.raises(ValueError, match="NaN"):
        eval_regdb(np.array([[np.nan, 1.0]]), np.array([1]), np.array([1, 2]))
    with pytest.raises(ValueError, match="2-D"):
        eval_regdb(np.zeros(3), np.array([1]), np.array([1, 2, 3]))
