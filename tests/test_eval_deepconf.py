"""Tests for vagent_jax.eval.deepconf: every formula against hand-worked numbers or a plain loop."""
import math

import numpy as np
import pytest

from vagent_jax.eval.deepconf import (
    deepconf_offline,
    deepconf_online,
    group_confidences,
    online_threshold,
    stop_position,
    token_confidence,
    top_percent_indices,
    trace_score,
)


def test_token_confidence_by_hand():
    lp = np.log([[0.5, 0.25], [0.9, 0.05]])
    want = [-(math.log(0.5) + math.log(0.25)) / 2, -(math.log(0.9) + math.log(0.05)) / 2]
    np.testing.assert_allclose(token_confidence(lp), want, rtol=1e-12)


def test_group_confidences_match_a_loop_and_short_traces_have_one_window():
    c = np.random.default_rng(0).uniform(0, 5, size=37)
    for n in (1, 4, 36, 37):
        loop = [c[i : i + n].mean() for i in range(len(c) - n + 1)]
        np.testing.assert_allclose(group_confidences(c, n), loop, rtol=1e-12)
    np.testing.assert_allclose(group_confidences(c[:3], 8), [c[:3].mean()])
    with pytest.raises(ValueError, match="window"):
        group_confidences(c, 0)


def test_trace_scores_by_hand():
    c = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # window 2 -> groups 1.5 2.5 3.5 4.5 5.5
    assert trace_score(c, 2, "mean") == 3.5
    assert trace_score(c, 2, "lowest_group") == 1.5
    assert trace_score(c, 2, "bottom_10") == 1.5  # max(1, floor(0.1*5)) = 1 window
    assert trace_score(c, 2, "bottom_10", bottom_fraction=0.4) == 2.0  # floor(2) windows: (1.5+2.5)/2
    assert trace_score(c, 2, "tail") == 5.5
    with pytest.raises(ValueError, match="unknown DeepConf trace score 'max'"):
        trace_score(c, 2, "max")


def test_top_percent_keeps_ceil_of_eta_ties_to_earlier():
    s = [0.1, 0.9, 0.5, 0.9]
    assert top_percent_indices(s, 50).tolist() == [1, 3]
    assert top_percent_indices(s, 10).tolist() == [1]  # ceil(0.4) = 1; 1 and 3 tie, 1 is earlier
    assert top_percent_indices(s, 90).tolist() == [0, 1, 2, 3]  # ceil(3.6) = 4


def test_offline_filter_changes_the_weighted_vote():
    confs = [[1.0, 1.0], [1.0, 1.0], [1.5, 1.5]]  # mean scores 1, 1, 1.5
    answers = ["A", "A", "B"]
    full = deepconf_offline(answers, confs, window=2, score="mean", eta=100)
    assert full.answer == "A" and full.kept == (0, 1, 2)  # A: 1+1 = 2 > B: 1.5
    top = deepconf_offline(answers, confs, window=2, score="mean", eta=34)
    assert top.answer == "B" and top.kept == (0, 2)  # ceil(1.02) = 2 kept: B 1.5 > A 1


def test_online_threshold_is_the_linear_percentile():
    assert online_threshold([5, 1, 3, 2, 4], eta=10) == pytest.approx(4.6)  # 90th: 4 + 0.6*(5-4)
    assert online_threshold([5, 1, 3, 2, 4], eta=100) == 1.0


def test_stop_position_matches_a_token_by_token_loop():
    assert stop_position([5, 5, 1, 1, 5], 3.5, 2) == 3  # window (5,1) mean 3 < 3.5 after token index 2
    assert stop_position([1.0], 3.5, 2) is None  # shorter than a window: never stopped
    assert stop_position([1.0, 1.0], 3.5, 2) == 2
    rng = np.random.default_rng(1)
    for _ in range(20):
        c = rng.uniform(0, 4, size=rng.integers(1, 30))
        n, s = int(rng.integers(1, 8)), float(rng.uniform(1, 3))
        want = next((t + 1 for t in range(n - 1, len(c)) if c[t - n + 1 : t + 1].mean() < s), None)
        assert stop_position(c, s, n) == want


def test_online_vote_and_tokens_saved_by_hand():
    warm_answers = ["A", "B", "B"]
    warm = [[4.0, 4.0, 4.0], [2.0, 2.0], [5.0, 5.0]]  # C_least 4, 2, 5 -> median s = 4 (eta 50)
    answers = ["A", "B", "B"]
    later = [[5.0] * 4, [5.0, 3.0, 3.0, 5.0, 5.0, 5.0], [1.0]]
    res = deepconf_online(warm_answers, warm, answers, later, window=2, eta=50)
    assert res.threshold == 4.0
    # trace 1: window (5, 3) mean 4 is not < 4; window (3, 3) mean 3 < 4 ends at token index 2 -> 3 tokens
    assert res.stopped_at == (None, 3, None)
    assert res.voters == ("warmup:0", "warmup:2", "trace:0", "trace:2")
    assert res.answer == "A"  # A: 4 + 5 = 9, B: 5 + 1 = 6
    assert (res.tokens_full, res.tokens_used, res.tokens_saved) == (18, 15, 3)
    assert res.saved_fraction == pytest.approx(3 / 18)
