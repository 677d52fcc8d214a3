"""From verified rollout groups to the update batch: shaped rewards, the dynamic-sampling filter, group
advantages, and fixed-shape padded arrays (one compiled update program whatever survives the filter).

Groups are G consecutive rollouts of one task. Rewards: the verifier's reward, optionally replaced by
GRPO-LEAD's length-dependent reward, plus DAPO's soft overlong punishment on the generated length.
Lengths are generated tokens (every policy turn of a trajectory, never prompt or tool observations),
measured against one L_max: the run's limit on generated tokens (docs/algorithms.md, "DAPO").
Padding rows carry loss_mask 0 and advantage 0, so under any aggregation they add nothing.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from vagent_jax.config import require
from vagent_jax.rl.advantages import compute_advantages
from vagent_jax.rl.rewards import (dynamic_sampling_keep, lead_length_reward, overlong_filter_mask,
                                   soft_overlong_punishment)


@dataclasses.dataclass(frozen=True)
class RewardShapingConfig:
    """Reward shaping before advantages (config section `rewards`)."""

    lead_length_reward: bool = False  # GRPO-LEAD: exp(-alpha z) for correct, -1 for incorrect
    overlong_cache_len: int = 0  # DAPO soft punishment buffer L_cache (0 = off); L_max is rl.max_response_tokens
    overlong_factor: float = 1.0
    overlong_filter: bool = False  # mask the loss of truncated responses

    def validate(self) -> None:
        """Ranges; errors name the key."""
        require(self.overlong_cache_len >= 0, "overlong_cache_len", f"must be >= 0, got {self.overlong_cache_len}")
        require(self.overlong_factor >= 0, "overlong_factor", f"must be >= 0, got {self.overlong_factor}")


def generation_budget(max_new_tokens: int, max_turns: int, max_len: int) -> int:
    """The most tokens a trajectory may generate: max_new_tokens per assistant turn times the environment's
    max_turns, at most the cache length max_len (the default L_max)."""
    return min(max_new_tokens * max_turns, max_len)


def shaped_rewards(reward: np.ndarray, correct: np.ndarray, lengths: np.ndarray, group_size: int,
                   cfg: RewardShapingConfig, l_max: int) -> np.ndarray:
    """Per-rollout rewards [N] (N = n_groups * group_size) after LEAD and overlong shaping; lengths are
    generated tokens and l_max the limit on them (L_max)."""
    n = reward.shape[0]
    if n % group_size:
        raise ValueError(f"{n} rollouts do not split into groups of {group_size}")
    ids = jnp.repeat(jnp.arange(n // group_size), group_size)
    r = jnp.asarray(reward, jnp.float32)
    if cfg.lead_length_reward:
        r = lead_length_reward(lengths, correct, ids)
    if cfg.overlong_cache_len > 0:
        r = r + soft_overlong_punishment(lengths, l_max, min(cfg.overlong_cache_len, l_max), cfg.overlong_factor)
    return np.asarray(r, np.float32)


def keep_groups(correct: np.ndarray, group_size: int) -> np.ndarray:
    """DAPO dynamic sampling per group [n_groups]: True iff 0 < #correct < G, on the verifier's verdict
    (correct [N] bool), so a length penalty never turns an all-correct group into a kept one."""
    ok = np.asarray(correct, bool)
    ids = jnp.repeat(jnp.arange(ok.shape[0] // group_size), group_size)
    return np.asarray(dynamic_sampling_keep(jnp.asarray(ok, jnp.float32), ids, correct=jnp.asarray(ok)))[::group_size]


def loss_rows_kept(truncated: np.ndarray, lengths: np.ndarray, l_max: int, overlong_filter: bool) -> np.ndarray:
    """bool [N]: rows whose loss counts. DAPO overlong filtering drops a response that was cut off
    (`truncated`) or generated more than l_max tokens; without filtering every row counts."""
    truncated = np.asarray(truncated, bool)
    if not overlong_filter:
        return np.ones(truncated.shape, bool)
    return np.asarray(overlong_filter_mask(truncated | (np.asarray(lengths) > l_max))) > 0


def group_advantages(name: str, rewards: np.ndarray, lengths: np.ndarray, correct: np.ndarray,
                     group_size: int) -> np.ndarray:
    """Advantages [N] of consecutive groups of `group_size` with the estimator `name`."""
    r = jnp.asarray(rewards, jnp.float32).reshape(-1, group_size)
    adv = compute_advantages(name, r, lengths=jnp.asarray(lengths, jnp.float32), correct=jnp.asarray(correct))
    return np.asarray(adv, np.float32)


def update_batch(trajectories: Sequence[Any], advantages: np.ndarray, keep_rows: np.ndarray, rows: int,
                 seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
    """Fixed-shape update arrays [rows, seq_len] (+ advantages [rows]) from engine Trajectories.

    loss_mask is the trajectory's gen_mask (policy tokens only; prompt and tool observations 0), zeroed
    for rows where keep_rows [N] is False (overlong filtering, `loss_rows_kept`). rollout_logp is
    pi_rollout (docs/algorithms.md, "Rollout-train mismatch"): the log-prob under the distribution the
    token was actually drawn from (the engine's sample_logprob: tempered, top-k/top-p/min-p truncated, in
    the sampler's dtype), so the mismatch metrics and the TIS/MIS weights pi_old / pi_rollout see
    truncation as well as numerics. Without truncation it equals the trainer's log-prob at the same T.
    """
    n = len(trajectories)
    if n > rows:
        raise ValueError(f"{n} trajectories do not fit the update batch of {rows} rows")
    tokens = np.full((rows, seq_len), pad_id, np.int32)
    loss_mask = np.zeros((rows, seq_len), np.float32)
    rollout_logp = np.zeros((rows, seq_len), np.float32)
    adv = np.zeros((rows,), np.float32)
    for i, tr in enumerate(trajectories):
        L = len(tr.tokens)
        if L > seq_len:
            raise ValueError(f"trajectory {tr.request_id!r} has {L} tokens, more than the update length {seq_len}")
        tokens[i, :L] = tr.tokens
        loss_mask[i, :L] = tr.gen_mask
        rollout_logp[i, :L] = tr.sample_logprob
        adv[i] = advantages[i]
        if not keep_rows[i]:
            loss_mask[i] = 0.0
    positions = np.broadcast_to(np.arange(seq_len, dtype=np.int32), (rows, seq_len)).copy()
    return {"tokens": tokens, "positions": positions, "loss_mask": loss_mask, "advantages": adv,
            "rollout_logp": rollout_logp}


def minibatch_slices(rows: int, updates: int, used_rows: int) -> list[slice]:
    """Row slices of the sequential updates over one padded batch: `updates` equal mini-batches of
    rows // updates rows, keeping only those that hold at least one of the first `used_rows` rows.

    Every used row falls in exactly one slice; a mini-batch of padding alone is dropped, because an
    optimizer step on no data still moves the params (Adam momentum, weight decay) and shifts the lr
    schedule.
    """
    if updates < 1 or rows % updates:
        raise ValueError(f"updates_per_batch {updates} does not split the update batch of {rows} rows")
    if not 0 <= used_rows <= rows:
        raise ValueError(f"used_rows {used_rows} is outside [0, {rows}]")
    mb = rows // updates
    return [slice(u * mb, (u + 1) * mb) for u in range(updates) if u * mb < used_rows]


@dataclasses.dataclass(frozen=True)
class StepBatch:
    """One RL step's update input: the padded batch arrays [rows, seq_len] (`update_batch`), the used rows'
    group advantages and loss-row mask, and the row slices of its sequential updates."""

    arrays: dict[str, np.ndarray]
    advantages: np.ndarray  # [N], N = the kept rollouts
    keep_rows: np.ndarray  # [N] False where overlong filtering drops the row from the loss
    parts: list[slice]  # minibatch_slices(rows, updates, N)


def build_step_batch(results: Sequence[Any], rewards: np.ndarray, *, advantage: str, group_size: int, l_max: int,
                     overlong_filter: bool, rows: int, seq_len: int, pad_id: int, updates: int) -> StepBatch:
    """The update input of kept rollout results (`rollout.RolloutResult`, G consecutive per group) and their
    shaped rewards: group advantages by `advantage`, overlong filtering at L_max, the fixed-shape batch."""
    if len(results) != len(rewards):
        raise ValueError(f"{len(results)} rollouts but {len(rewards)} rewards")
    lengths = np.asarray([x.trajectory.num_generated for x in results], np.float32)
    correct = np.asarray([x.reward.correct for x in results], bool)
    adv = group_advantages(advantage, np.asarray(rewards, np.float32), lengths, correct, group_size)
    keep_rows = loss_rows_kept(np.asarray([x.truncated for x in results], bool), lengths, l_max, overlong_filter)
    arrays = update_batch([x.trajectory for x in results], adv, keep_rows, rows, seq_len, pad_id)
    return StepBatch(arrays, adv, keep_rows, minibatch_slices(rows, updates, len(results)))
