"""AdamW with linear warm-up, a cosine or constant schedule and global-norm gradient clipping.

The update of one step, in order: clip the gradient to global norm `grad_clip_norm`, Adam moments
(b1, b2), decoupled weight decay on matrices (not on norms or biases), times -lr(step). The schedule's
step is the number of APPLIED updates (a step skipped by the NaN guard does not advance it), read back
from the optimizer state by `applied_updates`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax

from vagent_jax.config import config_scope, require

# Leaf names of parameters that get no weight decay (norm scales and attention biases).
_NO_DECAY = ("attn_norm", "mlp_norm", "q_norm", "k_norm", "final_norm", "bq", "bk", "bv")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW hyper-parameters and the learning-rate schedule (a config section: `optimizer.*`).

    lr(step) = lr * (step + 1) / warmup_steps while step < warmup_steps; then `constant` keeps lr and
    `cosine` decays to lr * min_lr_ratio at total_steps:
        lr * (r + (1 - r) * 0.5 * (1 + cos(pi * min(1, (step - warmup) / (total - warmup))))).
    grad_clip_norm <= 0 disables clipping.
    """

    lr: float = 3e-4
    warmup_steps: int = 10
    schedule: Literal["cosine", "constant"] = "cosine"
    total_steps: int = 1000
    min_lr_ratio: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip_norm: float = 1.0

    def validate(self) -> None:
        """Check ranges; every error names the key."""
        require(self.lr > 0 and math.isfinite(self.lr), "lr", f"must be > 0, got {self.lr}")
        require(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        require(self.schedule in ("cosine", "constant"), "schedule",
                f"{self.schedule!r} is not one of ('cosine', 'constant')")
        require(self.total_steps > 0, "total_steps", f"must be > 0, got {self.total_steps}")
        require(self.schedule != "cosine" or self.total_steps > self.warmup_steps, "total_steps",
                f"cosine needs total_steps > warmup_steps, got {self.total_steps} <= {self.warmup_steps}")
        require(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio",
                f"must be in [0, 1], got {self.min_lr_ratio}")
        require(0.0 <= self.b1 < 1.0, "b1", f"must be in [0, 1), got {self.b1}")
        require(0.0 <= self.b2 < 1.0, "b2", f"must be in [0, 1), got {self.b2}")
        require(self.eps > 0, "eps", f"must be > 0, got {self.eps}")
        require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(math.isfinite(self.grad_clip_norm), "grad_clip_norm",
                f"must be finite, got {self.grad_clip_norm}")

    def lr_at(self, step: jax.Array | int) -> jax.Array:
        """The learning rate used by the update with 0-based index `step` (for logging and tests)."""
        return lr_schedule(self)(step)


def lr_schedule(cfg: OptimizerConfig) -> optax.Schedule:
    """Warm-up then cosine/constant schedule as a function of the applied-update count."""

    def schedule(step: jax.Array | int) -> jax.Array:
        s = jnp.asarray(step, jnp.float32)
        warm = cfg.lr * jnp.minimum(1.0, (s + 1.0) / max(cfg.warmup_steps, 1))
        if cfg.schedule == "constant":
            after = jnp.asarray(cfg.lr, jnp.float32)
        else:
            frac = jnp.clip((s - cfg.warmup_steps) / (cfg.total_steps - cfg.warmup_steps), 0.0, 1.0)
            r = cfg.min_lr_ratio
            after = cfg.lr * (r + (1.0 - r) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac)))
        return jnp.where(s < cfg.warmup_steps, warm, after)

    return schedule


def decay_mask(params: Any) -> Any:
    """True for parameters that get weight decay: everything but norm scales and biases."""

    def keep(path: tuple[Any, ...], _: Any) -> bool:
        last = path[-1]
        name = getattr(last, "key", getattr(last, "name", str(last)))
        return name not in _NO_DECAY

    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
    """The optax chain: clip -> Adam -> masked decoupled weight decay -> scale by -lr(count)."""
    with config_scope("optimizer"):
        cfg.validate()
    parts = []
    if cfg.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
    parts.append(optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps))
    if cfg.weight_decay > 0:
        parts.append(optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask))
    parts.append(optax.scale_by_learning_rate(lr_schedule(cfg)))
    return optax.chain(*parts)


def applied_updates(opt_state: Any) -> jax.Array:
    """Number of updates applied so far (the schedule's step), read from the Adam state's count."""
    counts = [s.count for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
              if isinstance(s, optax.ScaleByAdamState)]
    if len(counts) != 1:
        raise ValueError(f"opt_state must hold exactly one Adam state (from make_optimizer), found {len(counts)}")
    return counts[0]
