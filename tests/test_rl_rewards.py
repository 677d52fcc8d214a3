"""Reward shaping and batch masks vs hand-worked values and numpy loops from docs/algorithms.md."""
import numpy as np
import pytest

from vagent_jax.rl.rewards import (
    dynamic_sampling_keep,
    lead_length_reward,
    overlong_filter_mask,
    soft_overlong_punishment,
)


def test_soft_overlong_hand_worked():
    # L_max = 20, L_cache = 4: free up to 16, ramp (16 - |y|)/4 up to 20, then -1.
    got = soft_overlong_punishment(np.array([10, 16, 17, 19, 20, 21, 100]), max_len=20, cache_len=4)
    np.testing.assert_allclose(np.asarray(got), [0, 0, -0.25, -0.75, -1, -1, -1])
    np.testing.assert_allclose(np.asarray(soft_overlong_punishment(np.array([18]), 20, 4, factor=0.5)), [-0.25])


def test_soft_overlong_random_vs_formula():
    lengths = np.random.default_rng(0).integers(0, 140, size=50)
    lmax, lcache = 120, 32
    want = [0.0 if y <= lmax - lcache else ((lmax - lcache) - y) / lcache if y <= lmax else -1.0 for y in lengths]
    np.testing.assert_allclose(np.asarray(soft_overlong_punishment(lengths, lmax, lcache)), want, rtol=1e-6)


def test_soft_overlong_bad_cache():
    with pytest.raises(ValueError, match="cache_len"):
        soft_overlong_punishment(np.array([3]), max_len=8, cache_len=9)


def test_lead_length_reward_vs_numpy():
    rng = np.random.default_rng(1)
    lengths = rng.integers(5, 60, size=(4, 6)).astype(float)
    correct = rng.random((4, 6)) > 0.4
    correct[0] = False
    correct[1] = [True] + [False] * 5  # a single correct answer: z = 0 -> reward 1
    got = np.asarray(lead_length_reward(lengths, correct)).reshape(4, 6)
    for g in range(4):
        ok = correct[g]
        mu, sigma = (lengths[g][ok].mean(), lengths[g][ok].std()) if ok.any() else (0.0, 0.0)
        for i in range(6):
            want = np.exp(-0.05 * (lengths[g, i] - mu) / (sigma + 1e-6)) if ok[i] else -1.0
            np.testing.assert_allclose(got[g, i], want, rtol=1e-5)
    assert got[1, 0] == pytest.approx(1.0)


def test_lead_length_reward_flat_groups():
    lengths = np.array([10.0, 30.0, 20.0, 5.0])
    ids = np.array([0, 0, 2, 0])
    correct = np.array([True, True, True, False])
    got = np.asarray(lead_length_reward(lengths, correct, ids))
    z = (np.array([10.0, 30.0]) - 20.0) / (10.0 + 1e-6)
    np.testing.assert_allclose(got, [np.exp(-0.05 * z[0]), np.exp(-0.05 * z[1]), 1.0, -1.0], rtol=1e-6)


def test_dynamic_sampling_keep():
    rewards = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.2, 0.2, 0.3]])
    keep = np.asarray(dynamic_sampling_keep(rewards)).reshape(4, 3)
    np.testing.assert_array_equal(keep[:, 0], [False, False, True, True])
    assert (keep == keep[:, :1]).all()
    correct = np.array([[1, 1, 1], [0, 0, 0], [0, 1, 0], [0, 0, 0]], bool)
    keep_c = np.asarray(dynamic_sampling_keep(rewards, correct=correct)).reshape(4, 3)
    np.testing.assert_array_equal(keep_c[:, 0], [False, False, True, False])
    flat = np.asarray(dynamic_sampling_keep(np.array([1.0, 0.0, 1.0, 1.0]), group_ids=np.array([0, 0, 1, 1])))
    np.testing.assert_array_equal(flat, [True, True, False, False])


def test_overlong_filter_mask():
    np.testing.assert_array_equal(np.asarray(overlong_filter_mask(np.array([True, False, True]))), [0.0, 1.0, 0.0])


def test_loss_rows_kept_counts_generated_tokens_against_l_max():
    from vagent_jax.rl.rollout_batch import loss_rows_kept

    truncated, lengths = np.array([True, False, False, False]), np.array([3, 11, 10, 2])
    np.testing.assert_array_equal(loss_rows_kept(truncated, lengths, 10, True), [False, False, True, True])
    np.testing.assert_array_equal(loss_rows_kept(truncated, lengths, 10, False), [True] * 4)  # filtering off
