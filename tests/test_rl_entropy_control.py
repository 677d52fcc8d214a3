"""Skywork-OR1 controller and the Clip-Cov / KL-Cov / high-entropy token selections vs numpy."""
import jax
import numpy as np
import pytest

from vagent_jax.config import ConfigError, from_dict
from vagent_jax.rl.entropy_control import (
    AdaptiveEntropyConfig,
    clip_cov_mask,
    entropy_bonus_coef,
    kl_cov_mask,
    token_covariance,
    top_fraction_mask,
    update_entropy_coef,
)


def test_controller_vs_loop():
    cfg = AdaptiveEntropyConfig(delta=1e-3, alpha_max=2.5e-3)
    entropies = [0.1, 0.15, 0.1, 0.05, 0.3, 0.5, 0.6, 0.1]
    alpha, ref = cfg.alpha_init, cfg.alpha_init
    for e in entropies:
        new, active = update_entropy_coef(alpha, e, cfg.target, cfg.delta, cfg.alpha_min, cfg.alpha_max)
        assert bool(active) == (e < 0.2)
        np.testing.assert_allclose(float(entropy_bonus_coef(alpha, active)), ref if e < 0.2 else 0.0, atol=1e-9)
        ref = min(max(ref + 1e-3 if e < 0.2 else ref - 1e-3, 0.0), 2.5e-3)
        np.testing.assert_allclose(float(new), ref, atol=1e-9)
        alpha = new
    # hits the cap (0.0025) after three low-entropy steps, back to 0 after the high ones
    assert float(alpha) == pytest.approx(1e-3)


def test_controller_defaults_and_validation():
    cfg = AdaptiveEntropyConfig()
    assert (cfg.target, cfg.alpha_init, cfg.delta, cfg.alpha_max, cfg.alpha_min) == (0.2, 0.0, 1e-4, 0.005, 0.0)
    with pytest.raises(ConfigError, match="'alpha_min'"):
        from_dict(AdaptiveEntropyConfig, {"alpha_min": 0.01})
    with pytest.raises(ConfigError, match="'delta'"):
        from_dict(AdaptiveEntropyConfig, {"delta": -1.0})


def _tokens(seed=0, b=6, t=12):
    rng = np.random.default_rng(seed)
    logp = -rng.uniform(0.0, 6.0, (b, t))
    adv = rng.normal(0, 2.0, b)
    valid = rng.random((b, t)) > 0.25
    return logp, adv, valid


def test_token_covariance_vs_numpy():
    logp, adv, valid = _tokens()
    got = np.asarray(token_covariance(logp, adv, valid))
    a = np.broadcast_to(adv[:, None], logp.shape)
    want = np.where(valid, (logp - logp[valid].mean()) * (a - a[valid].mean()), 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _np_top(score, valid, count):
    idx = np.argwhere(valid)
    order = np.argsort(-score[valid], kind="stable")[:count]
    out = np.zeros(valid.shape, bool)
    out[tuple(idx[order].T)] = True
    return out


@pytest.mark.parametrize("frac", [0.2, 0.3, 0.55, 1.0])
def test_top_fraction_vs_numpy(frac):
    logp, _, valid = _tokens(1)
    entropy = np.random.default_rng(5).uniform(0, 3, logp.shape)
    n = int(valid.sum())
    count = -(-round(frac * 100) * n // 100)  # exact ceil(frac * n)
    got = np.asarray(top_fraction_mask(entropy, valid, frac))
    np.testing.assert_array_equal(got, _np_top(entropy, valid, count))


def test_kl_cov_mask_vs_numpy():
    logp, adv, valid = _tokens(2)
    cov = np.asarray(token_covariance(logp, adv, valid))
    n = int(valid.sum())
    got = np.asarray(kl_cov_mask(cov, valid, 0.1))
    np.testing.assert_array_equal(got, _np_top(cov, valid, n // 10))
    # floor(2e-3 * N) = 0 here: at least one token is selected (the largest Cov), as verl does
    np.testing.assert_array_equal(np.asarray(kl_cov_mask(cov, valid, 2e-3)), _np_top(cov, valid, 1))
    assert not np.asarray(kl_cov_mask(cov, np.zeros_like(valid), 2e-3)).any()  # no valid token, no pick


def test_clip_cov_mask_picks_random_candidates():
    logp, adv, valid = _tokens(3)
    cov = np.asarray(token_covariance(logp, adv, valid))
    cand = valid & (cov > 1.0) & (cov < 5.0)
    n = int(valid.sum())
    assert cand.sum() > n // 10 > 1
    picks = [np.asarray(clip_cov_mask(cov, valid, jax.random.key(s), 0.1, 1.0, 5.0)) for s in range(4)]
    for p in picks:
        assert p.sum() == n // 10 and not (p & ~cand).any()
    assert len({p.tobytes() for p in picks}) > 1  # the key changes the pick
    one = np.asarray(clip_cov_mask(cov, valid, jax.random.key(0), 2e-4, 1.0, 5.0))
    assert one.sum() == 1  # max(1, floor(r N))
    none = np.asarray(clip_cov_mask(cov, valid, jax.random.key(0), 0.5, 100.0, 200.0))
    assert not none.any()
    # tokens PPO already clipped are never candidates
    clipped = cand & (np.arange(cand.size).reshape(cand.shape) % 2 == 0)
    for s in range(4):
        p = np.asarray(clip_cov_mask(cov, valid, jax.random.key(s), 0.5, 1.0, 5.0, clipped=clipped))
        assert not (p & clipped).any() and p.sum() == min(int((cand & ~clipped).sum()), n // 2)
