"""Rollout/train mismatch: how far the sampler's token log-probs (pi_rollout) are from the trainer's
(pi_old), and the TIS / MIS importance weights that correct for it (docs/algorithms.md, "Rollout–train
mismatch"). All arrays are [B, T]; `mask` is 1 on policy-generated tokens.
"""
from __future__ import annotations

import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

MismatchMode = Literal["none", "tis", "mis_token", "mis_seq"]


class MismatchMetrics(NamedTuple):
    """`means`: name -> (sum, count), add across micro-batches/hosts then divide.
    `maxima`: name -> scalar, reduce with max across micro-batches/hosts."""

    means: dict[str, tuple[jax.Array, jax.Array]]
    maxima: dict[str, jax.Array]


def _check(old_logp: jax.Array, rollout_logp: jax.Array, mask: jax.Array) -> None:
    if old_logp.ndim != 2:
        raise ValueError(f"old_logp must be [B, T], got shape {old_logp.shape}")
    for name, x in (("rollout_logp", rollout_logp), ("mask", mask)):
        if x.shape != old_logp.shape:
            raise ValueError(f"{name} shape {x.shape} differs from old_logp shape {old_logp.shape}")


def mismatch_metrics(old_logp: jax.Array, rollout_logp: jax.Array, mask: jax.Array) -> MismatchMetrics:
    """Per-token mismatch statistics over valid tokens.

    abs_prob_diff: mean |pi_old - pi_rollout|; kl: mean(log pi_rollout - log pi_old) (token KL estimate
    of KL(rollout || old) from rollout samples); max_ratio: max pi_old / pi_rollout (0 with no tokens).
    """
    _check(old_logp, rollout_logp, mask)
    valid = mask > 0
    m = valid.astype(jnp.float32)
    old = jnp.where(valid, old_logp, 0.0)
    roll = jnp.where(valid, rollout_logp, 0.0)
    count = m.sum()
    diff = jnp.abs(jnp.exp(old) - jnp.exp(roll))
    means = {
        "abs_prob_diff": ((m * diff).sum(), count),
        "kl": ((m * (roll - old)).sum(), count),
    }
    ratio = jnp.where(valid, jnp.exp(old - roll), 0.0)
    return MismatchMetrics(means=means, maxima={"max_ratio": jnp.max(ratio, initial=0.0)})


def mismatch_weights(
    old_logp: jax.Array, rollout_logp: jax.Array, mask: jax.Array, mode: MismatchMode, cap: float
) -> jax.Array:
    """Detached per-token weights [B, T] multiplying the policy-gradient loss; r_t = pi_old / pi_rollout.

    tis: w_t = min(r_t, C).  mis_token: w_t = 1 if 1/C <= r_t <= C else 0.  mis_seq: w_t = 1 for every
    token of a response whose geometric-mean ratio exp(mean_t log r_t) lies in [1/C, C], else 0.
    none: all ones. C = cap must be > 1. Invalid (mask 0) tokens get weight 0.
    """
    _check(old_logp, rollout_logp, mask)
    if mode != "none" and not cap > 1.0:
        raise ValueError(f"mismatch cap C must be > 1, got {cap}")
    valid = mask > 0
    m = valid.astype(jnp.float32)
    log_r = jax.lax.stop_gradient(jnp.where(valid, old_logp - rollout_logp, 0.0))
    hi = math.log(cap) if mode != "none" else 0.0
    lo = -hi
    if mode == "none":
        w = jnp.ones_like(m)
    elif mode == "tis":
        w = jnp.minimum(jnp.exp(log_r), cap)
    elif mode == "mis_token":
        w = ((log_r >= lo) & (log_r <= hi)).astype(jnp.float32)
    elif mode == "mis_seq":
        seq_log_r = (m * log_r).sum(1) / jnp.maximum(m.sum(1), 1.0)
        keep = (seq_log_r >= lo) & (seq_log_r <= hi)
        w = jnp.broadcast_to(keep[:, None].astype(jnp.float32), m.shape)
    else:
        raise ValueError(f"unknown mismatch mode {mode!r} (known: none, tis, mis_token, mis_seq)")
    return w * m
