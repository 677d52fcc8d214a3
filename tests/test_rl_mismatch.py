"""Rollout/train mismatch metrics and TIS/MIS weights vs numpy from docs/algorithms.md."""
import numpy as np
import pytest

from vagent_jax.rl.mismatch import mismatch_metrics, mismatch_weights


def _inputs(seed=0, b=6, t=9):
    rng = np.random.default_rng(seed)
    old = -rng.uniform(0.05, 3.0, (b, t))
    rollout = old + rng.normal(0, 0.6, (b, t)) + np.linspace(-0.8, 0.8, b)[:, None]  # per-row bias
    mask = rng.random((b, t)) > 0.3
    mask[0] = False
    rollout[~mask] = 40.0  # garbage outside the mask must not leak
    return old, rollout, mask


def test_metrics_vs_numpy():
    old, rollout, mask = _inputs()
    got = mismatch_metrics(old, rollout, mask.astype(np.float32))
    diff = np.abs(np.exp(old) - np.exp(rollout))[mask]
    s, c = got.means["abs_prob_diff"]
    np.testing.assert_allclose(float(s) / float(c), diff.mean(), rtol=1e-5)
    s, c = got.means["kl"]
    np.testing.assert_allclose(float(s) / float(c), (rollout - old)[mask].mean(), rtol=1e-5)
    np.testing.assert_allclose(float(got.maxima["max_ratio"]), np.exp(old - rollout)[mask].max(), rtol=1e-5)
    assert float(c) == mask.sum()


@pytest.mark.parametrize("mode", ["none", "tis", "mis_token", "mis_seq"])
def test_weights_vs_numpy(mode):
    old, rollout, mask = _inputs(1)
    cap = 1.5
    got = np.asarray(mismatch_weights(old, rollout, mask, mode, cap))
    want = np.zeros(old.shape)
    for i in range(old.shape[0]):
        geo = np.exp(np.mean((old[i] - rollout[i])[mask[i]])) if mask[i].any() else 1.0
        for t in range(old.shape[1]):
            if not mask[i, t]:
                continue
            r = np.exp(old[i, t] - rollout[i, t])
            want[i, t] = {"none": 1.0, "tis": min(r, cap), "mis_token": float(1 / cap <= r <= cap),
                          "mis_seq": float(1 / cap <= geo <= cap)}[mode]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    if mode.startswith("mis"):
        assert 0 < (want[mask] == 0).sum() < mask.sum()  # the test data exercises both outcomes


def test_cap_and_shapes_checked():
    old, rollout, mask = _inputs()
    with pytest.raises(ValueError, match="cap"):
        mismatch_weights(old, rollout, mask, "tis", 1.0)
    with pytest.raises(ValueError, match="rollout_logp"):
        mismatch_metrics(old, rollout[:, :3], mask)
