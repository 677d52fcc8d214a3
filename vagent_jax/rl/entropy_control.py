"""Entropy control: the Skywork-OR1 adaptive entropy-bonus coefficient, and the token selections that
the policy loss uses for Clip-Cov / KL-Cov (Cui et al.) and high-entropy token training ("80/20").

Selections are made over the valid tokens of the arrays passed in, from detached values; the RL step
passes the whole update batch (every micro-batch at once), so micro-batching never changes a selection
(docs/algorithms.md, "Entropy control"). Counts use floor/ceil of fraction * N with a 1e-6 relative slack
so that e.g. 0.2 * 10 counts as exactly 2 despite float rounding.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vagent_jax.config import require

_SLACK = 1e-6


@dataclasses.dataclass(frozen=True)
class AdaptiveEntropyConfig:
    """Skywork-OR1 adaptive entropy bonus (arXiv 2505.22312); defaults are the reference recipe."""

    target: float = 0.2
    alpha_init: float = 0.0
    delta: float = 1e-4
    alpha_min: float = 0.0
    alpha_max: float = 0.005

    def validate(self) -> None:
        """Check ranges; errors name the key."""
        require(self.target > 0, "target", f"target entropy must be > 0, got {self.target}")
        require(self.delta >= 0, "delta", f"must be >= 0, got {self.delta}")
        require(0 <= self.alpha_min <= self.alpha_max, "alpha_min",
                f"need 0 <= alpha_min <= alpha_max, got {self.alpha_min} and {self.alpha_max}")
        require(self.alpha_min <= self.alpha_init <= self.alpha_max, "alpha_init",
                f"must lie in [alpha_min, alpha_max] = [{self.alpha_min}, {self.alpha_max}], got {self.alpha_init}")


def update_entropy_coef(
    alpha: jax.Array | float,
    batch_entropy: jax.Array | float,
    target: float = 0.2,
    delta: float = 1e-4,
    alpha_min: float = 0.0,
    alpha_max: float = 0.005,
) -> tuple[jax.Array, jax.Array]:
    """One Skywork-OR1 controller step on the state alpha_k, given the step's batch entropy e_k.

    Returns (alpha_{k+1}, active_k): alpha_{k+1} = clip(alpha_k + delta if e_k < target else alpha_k - delta,
    alpha_min, alpha_max); active_k = e_k < target. Step k's loss uses loss -= alpha_k * [active_k] * H
    (see `entropy_bonus_coef`), i.e. the bonus is on only while entropy is below the target.
    """
    alpha = jnp.asarray(alpha, jnp.float32)
    active = jnp.asarray(batch_entropy, jnp.float32) < target
    new_alpha = jnp.clip(jnp.where(active, alpha + delta, alpha - delta), alpha_min, alpha_max)
    return new_alpha, active


def entropy_bonus_coef(alpha: jax.Array | float, active: jax.Array | bool) -> jax.Array:
    """The coefficient passed to the policy loss as `entropy_coef`: alpha if active else 0."""
    return jnp.where(active, jnp.asarray(alpha, jnp.float32), 0.0)


def token_covariance(logp: jax.Array, advantages: jax.Array, valid: jax.Array) -> jax.Array:
    """Cov_i = (logp_i - mean logp)(A_i - mean A) per token [B, T], means over valid tokens, all detached.

    logp [B, T]; advantages [B] (broadcast to tokens) or [B, T]; invalid tokens get 0.
    """
    valid = valid.astype(bool)
    m = valid.astype(jnp.float32)
    lp = jax.lax.stop_gradient(jnp.where(valid, logp, 0.0))
    adv = jnp.asarray(advantages, jnp.float32)
    adv = jax.lax.stop_gradient(jnp.broadcast_to(adv[:, None] if adv.ndim == 1 else adv, lp.shape))
    n = jnp.maximum(m.sum(), 1.0)
    lp_c = lp - (m * lp).sum() / n
    adv_c = adv - (m * adv).sum() / n
    return m * lp_c * adv_c


def _descending_rank(score: jax.Array, valid: jax.Array) -> jax.Array:
    """Rank [B, T] of each valid token by `score`, 0 = largest (ties by position); invalid rank last."""
    flat = jnp.where(valid, jax.lax.stop_gradient(score), -jnp.inf).reshape(-1)
    order = jnp.argsort(flat, descending=True, stable=True)
    ranks = jnp.zeros(flat.shape, jnp.int32).at[order].set(jnp.arange(flat.size, dtype=jnp.int32))
    return ranks.reshape(score.shape)


def top_fraction_mask(score: jax.Array, valid: jax.Array, frac: float) -> jax.Array:
    """Bool [B, T]: the ceil(frac * N) valid tokens with the largest `score` (N = #valid tokens).

    Used for high-entropy token selection (score = entropy, frac = rho in (0, 1]).
    """
    valid = valid.astype(bool)
    n = valid.sum().astype(jnp.float32)
    k = jnp.ceil(frac * n * (1.0 - _SLACK))
    return valid & (_descending_rank(score, valid) < k)


def kl_cov_mask(cov: jax.Array, valid: jax.Array, k: float) -> jax.Array:
    """Bool [B, T]: KL-Cov's max(1, floor(k * N)) valid tokens with the largest covariance Cov_i (none if N = 0).

    The floor of 1 keeps the penalty alive on small batches (k = 2e-3 and N < 500 would select nothing
    and leave an unclipped loss with no penalty); verl's kl_cov selects at least one token the same way.
    """
    valid = valid.astype(bool)
    n = valid.sum().astype(jnp.float32)
    count = jnp.maximum(1.0, jnp.floor(k * n * (1.0 + _SLACK)))
    return valid & (_descending_rank(cov, valid) < count)


def clip_cov_mask(
    cov: jax.Array, valid: jax.Array, key: jax.Array, ratio: float, w_low: float, w_high: float,
    clipped: jax.Array | None = None,
) -> jax.Array:
    """Bool [B, T]: Clip-Cov's tokens to detach.

    Candidates are valid tokens with w_low < Cov_i < w_high that PPO's clip has not already cut off
    (`clipped`, bool [B, T]: their gradient is zero anyway, as the reference excludes them);
    max(1, floor(ratio * N)) of them (all, if fewer) are picked uniformly at random with `key`
    (N = #valid tokens).
    """
    valid = valid.astype(bool)
    cand = valid & (cov > w_low) & (cov < w_high)
    if clipped is not None:
        cand = cand & ~clipped.astype(bool)
    n = valid.sum().astype(jnp.float32)
    count = jnp.maximum(1.0, jnp.floor(ratio * n * (1.0 + _SLACK)))
    priority = jax.random.uniform(key, cov.shape)
    return cand & (_descending_rank(priority, cand) < count)
