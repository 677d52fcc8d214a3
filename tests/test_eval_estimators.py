"""Tests for vagent_jax.eval.estimators against brute force and hand computations."""
import itertools
import math
from fractions import Fraction

import pytest

from vagent_jax.eval.estimators import (
    maj_at_k,
    majority_vote,
    mean_interval,
    mean_pass_at_k,
    pass_at_k,
    wilson_interval,
)


def test_pass_at_k_equals_enumerating_all_k_subsets():
    for n in range(1, 8):
        for c in range(n + 1):
            samples = [1] * c + [0] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(range(n), k))
                brute = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)


def test_pass_at_k_is_stable_for_large_n():
    exact = 1 - Fraction(math.comb(300, 100), math.comb(400, 100))  # n=400, c=100, k=100
    assert pass_at_k(400, 100, 100) == pytest.approx(float(exact), rel=1e-12)
    assert pass_at_k(1000, 1, 1) == pytest.approx(0.001, rel=1e-12)
    assert mean_pass_at_k([2, 4], [1, 0], 1) == pytest.approx((0.5 + 0.0) / 2)
    for bad in [(3, 4, 1), (3, 1, 0), (3, 1, 4)]:
        with pytest.raises(ValueError, match="pass_at_k"):
            pass_at_k(*bad)


def test_majority_vote_ties_go_to_the_earliest_first_occurrence():
    assert majority_vote(["b", "a", "a", "b"]) == "b"
    assert majority_vote(["a", None, "b", "b"]) == "b"
    assert majority_vote([None, None]) is None
    # weighted: a = 1 + 1 = 2, b = 3 -> b, although a has more votes
    assert majority_vote(["a", "b", "a"], [1.0, 3.0, 1.0]) == "b"
    with pytest.raises(ValueError, match="2 answers but 1 weights"):
        majority_vote(["a", "b"], [1.0])


def test_maj_at_k_by_hand():
    answers = ["3", "4", "4", "3", "5"]
    labels = [True, False, False, True, False]
    assert maj_at_k(answers, 3, labels=labels) == 0.0  # 4 wins 2:1
    assert maj_at_k(answers, 4, labels=labels) == 1.0  # 3 and 4 tie 2:2; "3" occurs first
    assert maj_at_k(answers, 1, correct_fn=lambda a: a == "3") == 1.0
    assert maj_at_k([None, None, "7"], 2, labels=[False, False, True]) == 0.0
    with pytest.raises(ValueError, match="exactly one"):
        maj_at_k(answers, 2)
    with pytest.raises(ValueError, match="1 <= k <= 5"):
        maj_at_k(answers, 6, labels=labels)


def test_wilson_interval_by_hand():
    # 8/10, z=1.96: centre (0.8 + 0.19208) / 1.38416 = 0.716738; half 1.96*sqrt(0.016 + 0.009604)/1.38416
    lo, hi = wilson_interval(8, 10, z=1.96)
    assert lo == pytest.approx(0.716738 - 0.226581, abs=1e-5)
    assert hi == pytest.approx(0.716738 + 0.226581, abs=1e-5)
    lo0, hi0 = wilson_interval(0, 20)
    assert lo0 == 0.0 and 0.0 < hi0 < 0.2
    with pytest.raises(ValueError, match="wilson_interval"):
        wilson_interval(3, 2)


def test_mean_interval_by_hand():
    # mean 0.625; s^2 = (0.390625 + 0.140625 + 0.140625 + 0.015625)/3; half = 1.96*s/2
    mean, lo, hi = mean_interval([0.0, 1.0, 1.0, 0.5], z=1.96)
    half = 1.96 * math.sqrt(0.6875 / 3) / 2
    assert mean == pytest.approx(0.625) and lo == pytest.approx(0.625 - half) and hi == 1.0
    with pytest.raises(ValueError, match="at least 2"):
        mean_interval([1.0])
