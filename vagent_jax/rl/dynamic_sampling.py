"""DAPO dynamic sampling (docs/algorithms.md): draw rounds of G rollouts per prompt until the step holds
`groups` groups that carry a learning signal (0 < #correct < G on the verifier's verdict, not on the
shaped reward) or `max_rounds` rounds are spent; a group without signal is dropped. Without filtering
one round is drawn and every group is kept.

The rounds are pure over two callables, so the rule is tested without an engine: `draw(round)` returns
one round's rollouts in prompt order (G consecutive rollouts per prompt), `score(rollouts)` their
verdicts and shaped rewards (`verdicts_and_rewards` for rollout results).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Generic, Sequence, TypeVar

import numpy as np

from vagent_jax.rl.rollout_batch import RewardShapingConfig, keep_groups, shaped_rewards

R = TypeVar("R")


@dataclasses.dataclass(frozen=True)
class SampledGroups(Generic[R]):
    """What the rounds of one step gave: the kept groups (in the order drawn, at most `groups` of them)
    flattened to rows with their shaped rewards, every rollout drawn (the step's metrics see them all),
    and the counters the run logs."""

    rollouts: list[R]
    rewards: np.ndarray  # [len(rollouts)] shaped rewards, row-aligned with rollouts
    every: list[R]
    rounds: int
    dropped: int  # groups without signal, over all rounds
    groups_kept: int


def sample_until_signal(draw: Callable[[int], Sequence[R]],
                        score: Callable[[Sequence[R]], tuple[np.ndarray, np.ndarray]], *, groups: int,
                        group_size: int, max_rounds: int, filter_groups: bool = True) -> SampledGroups[R]:
    """Run rounds `draw(0), draw(1), ...` until `groups` signal-carrying groups are kept or `max_rounds`
    rounds ran (filter_groups=False: one round, every group kept); groups past `groups` are not used."""
    if groups < 1 or group_size < 1 or max_rounds < 1:
        raise ValueError(f"dynamic sampling needs groups, group_size, max_rounds >= 1, got "
                         f"{groups}, {group_size}, {max_rounds}")
    kept: list[Sequence[R]] = []
    kept_r: list[np.ndarray] = []
    every: list[R] = []
    rounds = dropped = 0
    while len(kept) < groups and rounds < max_rounds:
        drawn = list(draw(rounds))
        rounds += 1
        every += drawn
        if len(drawn) % group_size:
            raise ValueError(f"round {rounds}: {len(drawn)} rollouts are not whole groups of {group_size}")
        correct, rewards = score(drawn)
        keep = keep_groups(correct, group_size) if filter_groups else np.ones(len(drawn) // group_size, bool)
        dropped += int((~keep).sum())
        for g in np.flatnonzero(keep):
            kept.append(drawn[g * group_size:(g + 1) * group_size])
            kept_r.append(rewards[g * group_size:(g + 1) * group_size])
        if not filter_groups:
            break
    kept, kept_r = kept[:groups], kept_r[:groups]
    flat_r = np.concatenate(kept_r).astype(np.float32) if kept_r else np.zeros((0,), np.float32)
    return SampledGroups([x for g in kept for x in g], flat_r, every, rounds, dropped, len(kept))


def verdicts_and_rewards(results: Sequence, group_size: int, shaping: RewardShapingConfig,
                         l_max: int) -> tuple[np.ndarray, np.ndarray]:
    """(verifier verdicts [N] bool, shaped rewards [N]) of rollout results (`rollout.RolloutResult`):
    the score of one round."""
    correct = np.asarray([x.reward.correct for x in results], bool)
    rewards = np.asarray([x.reward.reward for x in results], np.float32)
    lengths = np.asarray([x.trajectory.num_generated for x in results], np.float32)
    return correct, shaped_rewards(rewards, correct, lengths, group_size, shaping, l_max)
