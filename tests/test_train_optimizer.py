"""Optimizer: schedule values from the formula, config errors, weight-decay mask, AdamW update by hand."""
import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vagent_jax.config import ConfigError, from_dict
from vagent_jax.train.optimizer import OptimizerConfig, applied_updates, decay_mask, make_optimizer


def test_cosine_schedule_by_formula():
    cfg = OptimizerConfig(lr=1.0, warmup_steps=4, total_steps=14, min_lr_ratio=0.1)
    # warm-up: (s+1)/4; after: 0.1 + 0.9 * 0.5 * (1 + cos(pi * (s-4)/10)); clamped after total_steps
    want = [0.25, 0.5, 0.75, 1.0] + [0.1 + 0.45 * (1 + math.cos(math.pi * k / 10)) for k in range(11)] + [0.1]
    got = [float(cfg.lr_at(s)) for s in range(16)]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_constant_schedule_and_no_warmup():
    cfg = OptimizerConfig(lr=2e-3, warmup_steps=0, schedule="constant")
    np.testing.assert_allclose([float(cfg.lr_at(s)) for s in (0, 5, 10_000)], [2e-3] * 3, rtol=1e-6)


@pytest.mark.parametrize("key,value", [("lr", 0.0), ("warmup_steps", -1), ("schedule", "linear"),
                                       ("min_lr_ratio", 1.5), ("b2", 1.0), ("weight_decay", -0.1),
                                       ("total_steps", 5)])
def test_bad_config_names_the_key(key, value):
    base = {"warmup_steps": 10, "total_steps": 100}
    with pytest.raises(ConfigError, match=key):
        from_dict(OptimizerConfig, {**base, key: value}).validate()


def test_decay_mask_skips_norms_and_biases():
    params = {"embed": 1, "final_norm": 1, "layers": {"wq": 1, "bq": 1, "attn_norm": 1, "w_up": 1}}
    assert decay_mask(params) == {"embed": True, "final_norm": False,
                                  "layers": {"wq": True, "bq": False, "attn_norm": False, "w_up": True}}


def test_first_update_matches_adamw_by_hand():
    cfg = OptimizerConfig(lr=0.1, warmup_steps=0, schedule="constant", b1=0.9, b2=0.99, eps=1e-8,
                          weight_decay=0.5, grad_clip_norm=1.0)
    tx = make_optimizer(cfg)
    params = {"w": jnp.array([1.0, -2.0]), "final_norm": jnp.array([3.0])}
    grads = {"w": jnp.array([3.0, 0.0]), "final_norm": jnp.array([4.0])}  # global norm 5 -> scaled by 1/5
    state = tx.init(params)
    assert int(applied_updates(state)) == 0
    upd, state = tx.update(grads, state, params)
    # step 1 Adam with bias correction: m_hat / sqrt(v_hat) = g / |g| (0 where g = 0)
    np.testing.assert_allclose(upd["w"], [-0.1 * (1 + 0.5 * 1.0), -0.1 * (0 + 0.5 * -2.0)], rtol=1e-5)
    np.testing.assert_allclose(upd["final_norm"], [-0.1], rtol=1e-5)  # no decay on norms
    assert int(applied_updates(state)) == 1
    assert isinstance(tx, optax.GradientTransformation)
    with pytest.raises(ValueError, match="exactly one Adam state"):
        applied_updates(optax.sgd(0.1).init(params))
