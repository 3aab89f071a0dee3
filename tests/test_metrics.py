"""Retrieval metrics: hand-computed ranks, both tie policies, several captions per video, a loop-based reference."""

from __future__ import annotations

import numpy as np
import pytest

from hbci.metrics import dual_softmax, format_metrics, multi_caption_metrics, ranks, retrieval_metrics

# --- loop-based references, written for clarity, not speed ------------------------------------------------------


def naive_rank(scores: list[float], target: int, ties: str) -> int:
    rank = 1
    for j, score in enumerate(scores):
        if j == target:
            continue
        if score > scores[target] or (ties == "pessimistic" and score == scores[target]):
            rank += 1
    return rank


def naive_summary(rank_list: list[int]) -> dict:
    n = len(rank_list)
    ordered = sorted(rank_list)
    median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    return {"R@1": 100 * sum(r <= 1 for r in rank_list) / n, "R@5": 100 * sum(r <= 5 for r in rank_list) / n,
            "R@10": 100 * sum(r <= 10 for r in rank_list) / n, "MdR": median, "MnR": sum(rank_list) / n, "n": n}


def naive_multi_caption(sim: np.ndarray, owner: list[int], ties: str) -> dict:
    n_captions, n_videos = sim.shape
    t2v = [naive_rank(list(sim[c]), owner[c], ties) for c in range(n_captions)]
    v2t = []
    for v in range(n_videos):
        best_rank = None
        for c in range(n_captions):
            if owner[c] != v:
                continue
            # Rank of caption c among itself and the captions of other videos.
            pool = [c] + [d for d in range(n_captions) if owner[d] != v]
            rank = naive_rank([sim[d, v] for d in pool], 0, ties)
            best_rank = rank if best_rank is None else min(best_rank, rank)
        v2t.append(best_rank)
    return {"t2v": naive_summary(t2v), "v2t": naive_summary(v2t)}


def assert_metrics_equal(ours: dict, expected: dict) -> None:
    assert ours.keys() == expected.keys()
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key


# --- hand-computed -------------------------------------------------------------------------------------------------


def test_small_matrix_by_hand():
    sim = np.array([[0.9, 0.1, 0.3],
                    [0.8, 0.5, 0.2],
                    [0.1, 0.7, 0.4]])
    # Row 0: 0.9 is the largest -> 1. Row 1: 0.8 beats 0.5 -> 2. Row 2: 0.7 beats 0.4 -> 2.
    assert ranks(sim).tolist() == [1, 2, 2]
    # Columns as queries: 0.9 > 0.8, 0.1 -> 1; 0.5 < 0.7 -> 2; 0.4 > 0.3, 0.2 -> 1.
    assert ranks(sim.T).tolist() == [1, 2, 1]
    m = retrieval_metrics(sim)
    assert m == {"R@1": pytest.approx(100 / 3), "R@5": 100.0, "R@10": 100.0, "MdR": 2.0,
                 "MnR": pytest.approx(5 / 3), "n": 3}
    assert all(isinstance(m[k], float) for k in ("R@1", "R@5", "R@10", "MdR", "MnR")) and isinstance(m["n"], int)


def test_designed_ranks_for_recall_at_10():
    wanted = [1, 1, 2, 5, 6, 10, 11, 12, 3, 1, 7, 4]
    n = len(wanted)
    sim = np.full((n, n), -1.0)
    for i, rank in enumerate(wanted):
        sim[i, i] = 0.0
        others = [j for j in range(n) if j != i][: rank - 1]
        sim[i, others] = 1.0  # exactly rank-1 items beat the target
    assert ranks(sim).tolist() == wanted
    m = retrieval_metrics(sim)
    # <=1: three queries; <=5: 1,1,2,5,3,1,4 = 7; <=10: those plus 6,10,7 = 10.
    assert m["R@1"] == pytest.approx(25.0)
    assert m["R@5"] == pytest.approx(700 / 12)
    assert m["R@10"] == pytest.approx(1000 / 12)
    # Sorted: 1 1 1 2 3 4 | 5 6 7 10 11 12 -> median (4 + 5) / 2; sum 63.
    assert m["MdR"] == 4.5 and m["MnR"] == pytest.approx(63 / 12) and m["n"] == 12


def test_ties_under_both_policies():
    sim = np.array([[1.0, 1.0, 0.0],
                    [0.5, 0.5, 0.5],
                    [0.0, 2.0, 2.0]])
    # Row 0 ties with one item, row 1 with two, row 2 with one.
    assert ranks(sim, ties="pessimistic").tolist() == [2, 3, 2]
    assert ranks(sim, ties="optimistic").tolist() == [1, 1, 1]
    assert retrieval_metrics(sim)["R@1"] == 0.0
    assert retrieval_metrics(sim, ties="optimistic")["R@1"] == 100.0


def test_all_equal_matrix_gets_the_worst_rank():
    sim = np.full((4, 4), 0.25, dtype=np.float32)
    assert ranks(sim).tolist() == [4, 4, 4, 4]
    m = retrieval_metrics(sim)
    assert (m["R@1"], m["MdR"], m["MnR"]) == (0.0, 4.0, 4.0)
    assert ranks(sim, ties="optimistic").tolist() == [1, 1, 1, 1]
    both = multi_caption_metrics(sim, np.arange(4))
    assert both["t2v"]["MdR"] == 4.0 and both["v2t"]["MdR"] == 4.0


def test_explicit_targets_on_a_rectangular_matrix():
    sim = np.array([[0.1, 0.9, 0.3, 0.0],
                    [0.6, 0.2, 0.6, 0.7]])
    # Query 0 -> item 1 (best) -> 1; query 1 -> item 0: 0.7 beats it, 0.6 ties (pessimistic only).
    assert ranks(sim, targets=[1, 0]).tolist() == [1, 3]
    assert ranks(sim, targets=[1, 0], ties="optimistic").tolist() == [1, 2]


# --- several captions per video ------------------------------------------------------------------------------


def test_multi_caption_by_hand():
    owner = np.array([0, 0, 1, 2, 2])
    sim = np.array([[0.2, 0.6, 0.1],    # c0 -> v0: 0.6 beats it -> 2
                    [0.9, 0.3, 0.7],    # c1 -> v0: best -> 1
                    [0.5, 0.5, 0.0],    # c2 -> v1: ties with v0 -> 2 pessimistic, 1 optimistic
                    [0.3, 0.8, 0.7],    # c3 -> v2: 0.8 beats it -> 2
                    [0.1, 0.2, 0.05]])  # c4 -> v2: 0.1 and 0.2 beat it -> 3
    pessimistic = multi_caption_metrics(sim, owner)
    optimistic = multi_caption_metrics(sim, owner, ties="optimistic")
    assert_metrics_equal(pessimistic["t2v"], {"R@1": 20.0, "R@5": 100.0, "R@10": 100.0, "MdR": 2.0,
                                              "MnR": 10 / 5, "n": 5})
    assert_metrics_equal(optimistic["t2v"], {"R@1": 40.0, "R@5": 100.0, "R@10": 100.0, "MdR": 2.0,
                                             "MnR": 9 / 5, "n": 5})
    # v2t, column by column:
    #   v0: own captions c0 (0.2), c1 (0.9): best 0.9, no other caption reaches it -> 1.
    #   v1: own c2 (0.5): c0 (0.6) and c3 (0.8) beat it -> 3 under both policies.
    #   v2: own c3 (0.7), c4 (0.05): best 0.7; c1 of v0 ties at 0.7 -> 2 pessimistic, 1 optimistic.
    assert_metrics_equal(pessimistic["v2t"], {"R@1": 100 / 3, "R@5": 100.0, "R@10": 100.0, "MdR": 2.0,
                                              "MnR": 6 / 3, "n": 3})
    assert_metrics_equal(optimistic["v2t"], {"R@1": 200 / 3, "R@5": 100.0, "R@10": 100.0, "MdR": 1.0,
                                             "MnR": 5 / 3, "n": 3})


def test_own_captions_tied_at_the_top_do_not_compete():
    owner = [0, 0, 1]
    sim = np.array([[0.8, 0.1],
                    [0.8, 0.2],
                    [0.3, 0.9]])
    v2t = multi_caption_metrics(sim, owner)["v2t"]
    assert v2t["R@1"] == 100.0  # v0's two captions share the top score: still rank 1


def test_one_caption_per_video_equals_square_metrics():
    rng = np.random.default_rng(3)
    sim = np.round(rng.normal(size=(30, 30)), 1)  # rounding makes ties common
    for ties in ("pessimistic", "optimistic"):
        both = multi_caption_metrics(sim, np.arange(30), ties=ties)
        assert both["t2v"] == retrieval_metrics(sim, ties=ties)
        assert both["v2t"] == retrieval_metrics(sim.T, ties=ties)


# --- against the loop-based reference ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
def test_square_equals_naive_reference(seed, ties):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    sim = rng.normal(size=(n, n))
    if seed % 2:
        sim = np.round(sim, 1)
    expected = [naive_rank(list(sim[i]), i, ties) for i in range(n)]
    assert ranks(sim, ties=ties).tolist() == expected
    assert_metrics_equal(retrieval_metrics(sim, ties=ties), naive_summary(expected))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
def test_multi_caption_equals_naive_reference(seed, ties):
    rng = np.random.default_rng(100 + seed)
    n_videos = int(rng.integers(1, 15))
    owner = np.concatenate([np.arange(n_videos), rng.integers(0, n_videos, size=int(rng.integers(0, 30)))])
    rng.shuffle(owner)
    sim = np.round(rng.normal(size=(owner.size, n_videos)), 1).astype(np.float32)
    expected = naive_multi_caption(sim, owner.tolist(), ties)
    ours = multi_caption_metrics(sim, owner, ties=ties)
    assert_metrics_equal(ours["t2v"], expected["t2v"])
    assert_metrics_equal(ours["v2t"], expected["v2t"])


def test_blocked_counting_matches_unblocked(monkeypatch):
    import hbci.metrics as metrics

    rng = np.random.default_rng(7)
    sim = np.round(rng.normal(size=(50, 20)), 1)
    owner = rng.integers(0, 20, size=50)
    owner[:20] = np.arange(20)
    whole = multi_caption_metrics(sim, owner)
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 7)  # blocks of a single row
    assert multi_caption_metrics(sim, owner) == whole


# --- input checks --------------------------------------------------------------------------------------------


def test_nan_is_rejected():
    sim = np.eye(3)
    sim[1, 2] = np.nan
    for call in (lambda: ranks(sim), lambda: retrieval_metrics(sim), lambda: dual_softmax(sim),
                 lambda: multi_caption_metrics(sim, [0, 1, 2])):
        with pytest.raises(ValueError, match="NaN"):
            call()


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="square"):
        retrieval_metrics(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="ties"):
        retrieval_metrics(np.eye(2), ties="random")
    with pytest.raises(ValueError):
        retrieval_metrics(np.zeros((0, 0)))
    with pytest.raises(ValueError):
        retrieval_metrics(np.zeros(3))
    with pytest.raises(ValueError, match="caption_video"):
        multi_caption_metrics(np.zeros((3, 2)), [0, 1, 2])  # video 2 does not exist
    with pytest.raises(ValueError, match="caption_video"):
        multi_caption_metrics(np.zeros((3, 2)), [0, 1])  # wrong length
    with pytest.raises(ValueError, match="no caption"):
        multi_caption_metrics(np.zeros((3, 3)), [0, 0, 1])  # video 2 has no caption


def test_infinite_scores_are_ranked_not_rejected():
    sim = np.array([[np.inf, 0.0], [np.inf, -np.inf]])
    assert ranks(sim).tolist() == [1, 2]


# --- dual softmax --------------------------------------------------------------------------------------------


def test_dual_softmax_matches_the_formula():
    rng = np.random.default_rng(0)
    sim = rng.uniform(-0.2, 0.5, size=(6, 4))
    prior = np.exp(20.0 * sim) / np.exp(20.0 * sim).sum(axis=0, keepdims=True)
    np.testing.assert_allclose(dual_softmax(sim, temperature=20.0), sim * prior, rtol=1e-12)
    np.testing.assert_allclose(dual_softmax(sim, temperature=20.0, axis=1),
                               sim * np.exp(20.0 * sim) / np.exp(20.0 * sim).sum(axis=1, keepdims=True), rtol=1e-12)


def test_dual_softmax_properties():
    rng = np.random.default_rng(1)
    sim = rng.uniform(-1, 1, size=(8, 5)).astype(np.float32)
    out = dual_softmax(sim)
    assert out.shape == sim.shape and out.dtype == np.float32
    # The softmax weights are the ratio and sum to one over the query axis.
    weights = out.astype(np.float64) / sim
    np.testing.assert_allclose(weights.sum(axis=0), 1.0, rtol=1e-5)
    assert (weights >= 0).all()
    # A constant matrix: every query gets an equal share.
    np.testing.assert_allclose(dual_softmax(np.full((4, 3), 0.6)), 0.6 / 4)
    # Stable where a naive exp overflows.
    big = np.array([[1000.0, 0.0], [999.0, 5.0]])
    out = dual_softmax(big, temperature=100.0)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:, 0], [1000.0 / (1 + np.exp(-100.0)), 999.0 * np.exp(-100.0) / (1 + np.exp(-100.0))])
    # The input is left untouched.
    before = sim.copy()
    dual_softmax(sim)
    np.testing.assert_array_equal(sim, before)


def test_dual_softmax_rejects_bad_temperature_and_inf():
    for bad in (0.0, -1.0, np.inf):
        with pytest.raises(ValueError, match="temperature"):
            dual_softmax(np.eye(2), temperature=bad)
    with pytest.raises(ValueError, match="finite"):
        dual_softmax(np.array([[np.inf, 0.0], [0.0, 1.0]]))


# --- formatting ----------------------------------------------------------------------------------------------


def test_format_metrics_one_line():
    m = retrieval_metrics(np.eye(3))
    assert format_metrics(m) == "R@1 100.0 R@5 100.0 R@10 100.0 MdR 1.0 MnR 1.0 (n=3)"
    both = format_metrics(multi_caption_metrics(np.eye(3), [0, 1, 2]))
    assert both.startswith("t2v: R@1 100.0") and " | v2t: R@1 100.0" in both and "\n" not in both


def test_paired_difference_by_hand():
    from hbci.metrics import paired_difference

    r = paired_difference(np.array([1, 1, 2, 1]), np.array([1, 2, 1, 3]))
    # hits 1,1,0,1 against 1,0,1,0: differences 0, 1, -1, 1 (mean 0.25, sample std sqrt(11/12))
    assert r["R@1 a"] == 75.0 and r["R@1 b"] == 50.0 and r["difference"] == 25.0
    assert r["se_paired"] == pytest.approx(100 * np.sqrt(11 / 12) / 2)
    assert r["se_independent"] == pytest.approx(100 * np.sqrt((0.75 * 0.25 + 0.5 * 0.5) / 4))
    assert (r["a_only"], r["b_only"], r["n"]) == (2, 1, 4)


def test_paired_error_is_small_when_models_agree_and_zero_for_one_model():
    from hbci.metrics import paired_difference

    rng = np.random.default_rng(0)
    a = rng.integers(1, 4, 500)
    b = a.copy()
    b[:20] = np.where(b[:20] == 1, 2, 1)  # the models disagree on 20 of 500 queries
    r = paired_difference(a, b)
    assert r["se_paired"] < r["se_independent"] / 3
    same = paired_difference(a, a)
    assert same["difference"] == same["se_paired"] == same["a_only"] == same["b_only"] == 0
    with pytest.raises(ValueError, match="same"):
        paired_difference(a, a[:-1])
