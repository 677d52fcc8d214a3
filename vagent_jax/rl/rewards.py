"""Reward shaping and batch filters applied between the verifier and the advantage estimator.

DAPO's soft overlong punishment, GRPO-LEAD's length-dependent reward for correct answers, DAPO's
dynamic-sampling keep mask and overlong-filtering loss mask (formulas: docs/algorithms.md). Inputs follow
`advantages.group_layout`: per-response arrays are [n_groups, G] or flat [N] with `group_ids`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vagent_jax.rl.advantages import group_layout, group_mean_std

LEAD_ALPHA = 0.05


def soft_overlong_punishment(lengths: jax.Array, max_len: int, cache_len: int, factor: float = 1.0) -> jax.Array:
    """DAPO R_len, added to the correctness reward (times `factor`); shape of `lengths`.

    R_len(y) = 0 if |y| <= L_max - L_cache; ((L_max - L_cache) - |y|) / L_cache if L_max - L_cache < |y| <= L_max;
    -1 if |y| > L_max.  (L_max = max_len, L_cache = cache_len.)
    """
    if not 0 < cache_len <= max_len:
        raise ValueError(f"overlong cache_len must be in (0, max_len={max_len}], got {cache_len}")
    length = jnp.asarray(lengths, jnp.float32)
    start = float(max_len - cache_len)
    ramp = (start - length) / float(cache_len)
    r = jnp.where(length <= start, 0.0, jnp.where(length <= max_len, ramp, -1.0))
    return factor * r


def lead_length_reward(
    lengths: jax.Array,
    correct: jax.Array,
    group_ids: jax.Array | None = None,
    *,
    alpha: float = LEAD_ALPHA,
    eps: float = 1e-6,
) -> jax.Array:
    """GRPO-LEAD reward [N]: exp(-alpha z) for correct answers, -1 for incorrect ones.

    z = (|o| - mu) / (sigma + eps) with mu, sigma the mean and population std of the lengths of the
    correct responses in the same group, so shorter correct answers earn more.
    """
    flat_len, ids, num_groups = group_layout(jnp.asarray(lengths, jnp.float32), group_ids)
    ok = jnp.asarray(correct).reshape(-1).astype(bool)
    if ok.shape != flat_len.shape:
        raise ValueError(f"correct must have {flat_len.shape[0]} entries like lengths, got shape {ok.shape}")
    mu, sigma, _ = group_mean_std(flat_len, ids, num_groups, where=ok)
    z = (flat_len - mu) / (sigma + eps)
    return jnp.where(ok, jnp.exp(-alpha * z), -1.0)


def dynamic_sampling_keep(
    rewards: jax.Array, group_ids: jax.Array | None = None, correct: jax.Array | None = None
) -> jax.Array:
    """DAPO dynamic-sampling keep mask [N] (bool, one value per response, equal within a group).

    With `correct` given: keep a group iff 0 < #correct < G. Without: keep iff its rewards are not all
    equal (max > min), the same test for 0/1 rewards; such groups carry zero advantage otherwise.
    """
    flat, ids, num_groups = group_layout(rewards, group_ids)
    if correct is not None:
        ok = jnp.asarray(correct).reshape(-1).astype(jnp.float32)
        if ok.shape != flat.shape:
            raise ValueError(f"correct must have {flat.shape[0]} entries like rewards, got shape {ok.shape}")
        frac, _, _ = group_mean_std(ok, ids, num_groups)
        return (frac > 0) & (frac < 1)
    hi = jax.ops.segment_max(flat, ids, num_segments=num_groups)[ids]
    lo = jax.ops.segment_min(flat, ids, num_segments=num_groups)[ids]
    return hi > lo


def overlong_filter_mask(truncated: jax.Array) -> jax.Array:
    """DAPO overlong filtering: per-response loss weight, 0.0 for truncated responses and 1.0 otherwise.

    Multiply it into the token mask so a truncated response (no final answer) adds no loss and no tokens.
    """
    return 1.0 - jnp.asarray(truncated).astype(jnp.float32)
