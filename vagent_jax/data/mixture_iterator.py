"""RL prompts from a mixture: one ShardedTaskIterator per member over its own generated task set, each
step's prompt count split by the step's weights (data/mixture.py explains the apportionment)."""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from vagent_jax.config import require
from vagent_jax.data.task_pipeline import Task
from vagent_jax.data.task_source import ShardedTaskIterator, TaskConfig, train_tasks
from vagent_jax.envs.mixture import MEMBER_KEY, apportion
from vagent_jax.envs.reasoning_gym_env import derived_seed


def member_task_configs(cfg: TaskConfig, level: int = 1) -> dict[str, TaskConfig]:
    """Each mixture member as a task set of its own: its env (rubric-wrapped), difficulty + level - 1, and a
    seed derived from its name (so adding a member leaves the others' tasks unchanged)."""
    from vagent_jax.data.mixture import member_specs

    out = {}
    for spec in member_specs(cfg.mix):
        out[spec["name"]] = dataclasses.replace(
            cfg, env=spec["env"], env_args=spec["args"], mix=(), rubric=(),
            difficulty=spec["difficulty"] + level - 1, seed=derived_seed("mix", spec["name"], cfg.seed) % 2**31)
    return out


def build_member_tasks(cfg: TaskConfig, level: int = 1) -> None:
    """Build (or find) every member's task set on disk (process 0 calls this before the others read)."""
    for member in member_task_configs(cfg, level).values():
        train_tasks(member)


class MixtureTaskIterator:
    """This process's part of each step's mixed prompts; `weights` (one per member) set the split.

    take(n): counts = K * apportion(n / K, weights) with K data shards, then each member's iterator
    draws its count; tasks come tagged with their member (`mix_env`), members in config order."""

    def __init__(self, cfg: TaskConfig, level: int = 1, process_index: int = 0, process_count: int = 1) -> None:
        self.configs = member_task_configs(cfg, level)
        self.names = list(self.configs)
        self._its = {k: ShardedTaskIterator(c, process_index, process_count) for k, c in self.configs.items()}
        first = self._its[self.names[0]]
        self.shards, self.per_process = first.shards, first.per_process
        self.weights = [e.weight for e in cfg.mix]
        self.last_counts: dict[str, int] = {}

    def set_weights(self, weights: Sequence[float]) -> None:
        """The next take's weights (non-negative, positive sum)."""
        if len(weights) != len(self.names) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"mixture weights must be {len(self.names)} non-negative numbers with a positive sum, "
                             f"got {list(weights)}")
        self.weights = [float(w) for w in weights]

    def local_count(self, n: int) -> int:
        """How many of a step's n prompts this process draws."""
        return self._its[self.names[0]].local_count(n)

    def first_index(self, n: int) -> int:
        """Index, in the step's list of n prompts, of this process's first prompt."""
        return self._its[self.names[0]].first_index(n)

    def take(self, n: int) -> list[Task]:
        """This process's part of the next n prompts, split by the current weights."""
        require(n % self.shards == 0, "prompts_per_step",
                f"{n} prompts do not split evenly over tasks.shards={self.shards} data shards")
        counts = [c * self.shards for c in apportion(n // self.shards, self.weights)]
        self.last_counts = dict(zip(self.names, counts))
        out: list[Task] = []
        for name, c in zip(self.names, counts):
            out += [dict(t, **{MEMBER_KEY: name}) for t in self._its[name].take(c)] if c else []
        return out

    def get_state(self) -> list[dict[str, Any]]:
        """Per owned shard, in shard order: {member: that shard's iterator state}."""
        states = {k: it.get_state() for k, it in self._its.items()}
        return [{k: states[k][j] for k in self.names} for j in range(self.per_process)]

    def set_state(self, states: Sequence[dict[str, Any]] | dict[str, Any]) -> None:
        """Resume from the states of all K shards (each {member: state})."""
        states = [states] if isinstance(states, dict) and set(states) == set(self.names) else list(states)
        for k, it in self._its.items():
            it.set_state([s[k] for s in states])
