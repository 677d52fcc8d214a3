"""Group-relative advantage estimators, registered by name in `ADVANTAGES` (the only list of names).

A group is the G responses sampled for one prompt. Every estimator maps one reward per response to one
advantage per response, using only statistics of the response's own group (formulas: docs/algorithms.md).
Rewards come either as [n_groups, G] or flat [N] with integer `group_ids` in [0, N); the output is
always flat [N] in the same order. GRPO/DAPO's std is the SAMPLE std (ddof=1, Bessel-corrected), as verl
(torch.std) and TRL compute it; a group of one gets mean 0 and std 1 there, as in verl. Other group
statistics (GRPO-LEAD's length z-score and pass rate) use the population form. Formulas and papers:
docs/algorithms.md.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from vagent_jax.rl.registry import Registry

# (rewards [N], lengths [N], correct [N] bool, group_ids [N] int, num_groups, eps) -> advantages [N]
AdvantageFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array, int, float], jax.Array]
ADVANTAGES: Registry[AdvantageFn] = Registry("advantage estimator")

# GRPO-LEAD difficulty weight defaults (arXiv 2504.09696).
LEAD_A, LEAD_B, LEAD_P0, LEAD_K = 0.4, 1.5, 0.75, 10.0


def group_layout(rewards: jax.Array, group_ids: jax.Array | None = None) -> tuple[jax.Array, jax.Array, int]:
    """Flatten rewards to [N] with group ids [N] and a static group count.

    [n_groups, G] input gets ids 0..n_groups-1 row by row; flat [N] input needs `group_ids` (ints in
    [0, N), e.g. the prompt's index in the batch) and uses N segments so the shape stays static.
    """
    rewards = jnp.asarray(rewards, jnp.float32)
    if rewards.ndim == 2:
        if group_ids is not None:
            raise ValueError(f"rewards is 2-D {rewards.shape} (one row per group): do not pass group_ids")
        n, g = rewards.shape
        return rewards.reshape(-1), jnp.repeat(jnp.arange(n, dtype=jnp.int32), g), n
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be [N] or [n_groups, G], got shape {rewards.shape}")
    if group_ids is None:
        raise ValueError("rewards is flat [N]: group_ids [N] is required")
    group_ids = jnp.asarray(group_ids)
    if group_ids.shape != rewards.shape or not jnp.issubdtype(group_ids.dtype, jnp.integer):
        raise ValueError(
            f"group_ids must be integer with shape {rewards.shape}, got {group_ids.dtype}{group_ids.shape}"
        )
    return rewards, group_ids.astype(jnp.int32), rewards.shape[0]


def group_sum(x: jax.Array, group_ids: jax.Array, num_groups: int) -> jax.Array:
    """Per-response sum of `x` over the response's group: out_i = sum_{j: g_j = g_i} x_j, shape [N]."""
    sums = jax.ops.segment_sum(x, group_ids, num_segments=num_groups)
    return sums[group_ids]


def group_mean_std(
    x: jax.Array, group_ids: jax.Array, num_groups: int, where: jax.Array | None = None, ddof: int = 0
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-response (mean, std, count) of `x` over the group members selected by `where`; the std divides
    by count - ddof (ddof 0: population, 1: sample).

    A group with no selected member gets mean 0, std 0, count 0; one with count <= ddof gets std 0.
    """
    w = jnp.ones_like(x) if where is None else jnp.asarray(where, x.dtype)
    count = group_sum(w, group_ids, num_groups)
    mean = group_sum(w * x, group_ids, num_groups) / jnp.maximum(count, 1.0)
    var = group_sum(w * (x - mean) ** 2, group_ids, num_groups) / jnp.maximum(count - ddof, 1.0)
    return mean, jnp.where(count > ddof, jnp.sqrt(var), 0.0), count


@ADVANTAGES.register("grpo")
def grpo_advantages(
    rewards: jax.Array, lengths: jax.Array, correct: jax.Array, group_ids: jax.Array, num_groups: int, eps: float
) -> jax.Array:
    """GRPO: A_i = (r_i - mean_j r_j) / (std_j r_j + eps) within the group, std the sample std (ddof=1);
    a group of one has mean 0 and std 1 (verl's convention)."""
    mean, std, count = group_mean_std(rewards, group_ids, num_groups, ddof=1)
    single = count < 2
    mean, std = jnp.where(single, 0.0, mean), jnp.where(single, 1.0, std)
    return (rewards - mean) / (std + eps)


@ADVANTAGES.register("dapo")
def dapo_advantages(
    rewards: jax.Array, lengths: jax.Array, correct: jax.Array, group_ids: jax.Array, num_groups: int, eps: float
) -> jax.Array:
    """DAPO: the GRPO formula, A_i = (r_i - mean_j r_j) / (std_j r_j + eps)."""
    return grpo_advantages(rewards, lengths, correct, group_ids, num_groups, eps)


@ADVANTAGES.register("drgrpo")
def drgrpo_advantages(
    rewards: jax.Array, lengths: jax.Array, correct: jax.Array, group_ids: jax.Array, num_groups: int, eps: float
) -> jax.Array:
    """Dr. GRPO: A_i = r_i - mean_j r_j (no std division, which biases toward easy/hard prompts)."""
    mean, _, _ = group_mean_std(rewards, group_ids, num_groups)
    return rewards - mean


@ADVANTAGES.register("opo")
def opo_advantages(
    rewards: jax.Array, lengths: jax.Array, correct: jax.Array, group_ids: jax.Array, num_groups: int, eps: float
) -> jax.Array:
    """OPO: A_i = r_i - b*, b* = sum_j |o_j| r_j / sum_j |o_j| (length-weighted); a group of one gets b = 0."""
    lengths = lengths.astype(jnp.float32)
    total_len = group_sum(lengths, group_ids, num_groups)
    size = group_sum(jnp.ones_like(rewards), group_ids, num_groups)
    baseline = group_sum(lengths * rewards, group_ids, num_groups) / jnp.maximum(total_len, 1e-12)
    baseline = jnp.where((size > 1) & (total_len > 0), baseline, 0.0)
    return rewards - baseline


def lead_difficulty_weight(
    pass_rate: jax.Array, a: float = LEAD_A, b: float = LEAD_B, p0: float = LEAD_P0, k: float = LEAD_K
) -> jax.Array:
    """GRPO-LEAD difficulty weight w(p) = A + (B - A) / (1 + exp(k (p - p0))): hard prompts weigh more."""
    return a + (b - a) / (1.0 + jnp.exp(k * (pass_rate - p0)))


@ADVANTAGES.register("grpo_lead")
def grpo_lead_advantages(
    rewards: jax.Array, lengths: jax.Array, correct: jax.Array, group_ids: jax.Array, num_groups: int, eps: float
) -> jax.Array:
    """GRPO-LEAD: std-normalised A_i, then A~_i = A_i w(p) if A_i > 0 else A_i w(1 - p), p = group pass rate."""
    adv = grpo_advantages(rewards, lengths, correct, group_ids, num_groups, eps)
    p, _, _ = group_mean_std(correct.astype(jnp.float32), group_ids, num_groups)
    return jnp.where(adv > 0, adv * lead_difficulty_weight(p), adv * lead_difficulty_weight(1.0 - p))


def compute_advantages(
    name: str,
    rewards: jax.Array,
    *,
    group_ids: jax.Array | None = None,
    lengths: jax.Array | None = None,
    correct: jax.Array | None = None,
    eps: float = 1e-6,
) -> jax.Array:
    """Advantages [N] from the estimator registered as `name` (config key `advantage`).

    rewards: [n_groups, G] or [N] with group_ids [N]; lengths [N]: generated tokens per response (needed
    by opo); correct [N] bool: pass/fail per response (grpo_lead's pass rate; default: reward > 0).
    """
    fn = ADVANTAGES.get(name, key="advantage")
    flat, ids, num_groups = group_layout(rewards, group_ids)
    n = flat.shape[0]
    if lengths is None:
        if name == "opo":
            raise ValueError("advantage 'opo' needs lengths [N] (generated tokens per response)")
        lengths = jnp.ones((n,), jnp.float32)
    lengths = jnp.asarray(lengths).reshape(-1)
    if lengths.shape != (n,):
        raise ValueError(f"lengths must have {n} entries (one per response), got shape {lengths.shape}")
    correct = flat > 0 if correct is None else jnp.asarray(correct).reshape(-1).astype(bool)
    if correct.shape != (n,):
        raise ValueError(f"correct must have {n} entries (one per response), got shape {correct.shape}")
    return fn(flat, lengths, correct, ids, num_groups, eps)
