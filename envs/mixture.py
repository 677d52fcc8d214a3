"""A mixture of environments behind one Environment (`mix`): each task names its member (`mix_env`), and
every call (prompt, step, verify, demonstrations) goes to that member, so the rollout path, the worker
pool, SFT, evaluation and distillation handle a mixture exactly as one environment.

Members: [{name, env, args, weight, difficulty}]. generate_tasks(n, seed, d) splits n by weight (largest
remainder), draws each member's tasks at its own difficulty + d - 1 from a seed derived from its name,
tags them, and interleaves them by a seeded shuffle.
"""
from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

from vagent_jax.envs.base import EnvStep, Environment, Message, as_messages
from vagent_jax.envs.reasoning_gym_env import derived_seed
from vagent_jax.envs.registry import get_env, register_env

MEMBER_KEY = "mix_env"


def apportion(n: int, weights: Sequence[float]) -> list[int]:
    """Split n into integer counts proportional to `weights` (largest remainder; ties to the earlier one).

    Hand-worked: n=10, weights (1, 1, 1) -> quotas 3.33 each -> (4, 3, 3)."""
    total = float(sum(weights))
    if n < 0 or total <= 0 or any(w < 0 for w in weights):
        raise ValueError(f"apportion: need n >= 0 and non-negative weights with a positive sum, got {n}, {weights}")
    quotas = [n * w / total for w in weights]
    counts = [int(q) for q in quotas]
    order = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


@register_env("mix")
class MixtureEnv(Environment):
    """Dispatches to member environments by the task's `mix_env` tag."""

    name = "mix"

    def __init__(self, members: Sequence[Mapping[str, Any]]) -> None:
        if not members:
            raise ValueError("mix: needs at least one member {name, env, args, weight, difficulty}")
        self.members: dict[str, Environment] = {}
        self.weights: dict[str, float] = {}
        self.difficulty: dict[str, int] = {}
        for m in members:
            name = str(m["name"])
            if name in self.members:
                raise ValueError(f"mix: member name {name!r} appears twice")
            self.members[name] = get_env(str(m["env"]), **dict(m.get("args") or {}))
            self.weights[name] = float(m.get("weight", 1.0))
            self.difficulty[name] = int(m.get("difficulty", 1))
        envs = list(self.members.values())
        self.max_turns = max(e.max_turns for e in envs)
        self.verify_timeout_s = max(e.verify_timeout_s for e in envs)
        super().__init__()

    def member(self, task: Mapping[str, Any]) -> Environment:
        """The member environment of a task (a ValueError names a task without a known tag)."""
        name = task.get(MEMBER_KEY)
        if name not in self.members:
            raise ValueError(f"mix: task has {MEMBER_KEY}={name!r}, not one of {sorted(self.members)}")
        return self.members[name]

    def member_tasks(self, name: str, n: int, seed: int, difficulty: int = 1) -> list[dict]:
        """n tasks of member `name`, tagged, at its difficulty + difficulty - 1."""
        level = self.difficulty[name] + difficulty - 1
        tasks = self.members[name].generate_tasks(n, derived_seed("mix", name, seed), level)
        return [dict(t, **{MEMBER_KEY: name}) for t in tasks]

    def generate_tasks(self, n: int, seed: int, difficulty: int = 1, even: bool = False) -> list[dict]:
        """n tagged tasks split by the members' weights (`even`: equal shares, for held-out evaluation)."""
        names = list(self.members)
        weights = [1.0] * len(names) if even else [self.weights[k] for k in names]
        tasks = [t for k, c in zip(names, apportion(n, weights)) for t in self.member_tasks(k, c, seed, difficulty)]
        random.Random(derived_seed("mix-order", seed, difficulty)).shuffle(tasks)
        return tasks

    def initial_messages(self, task: Mapping[str, Any]) -> list[Message]:
        return self.member(task).initial_messages(task)

    def prompt(self, task: Mapping[str, Any]) -> str:
        return self.member(task).prompt(task)

    def verify(self, task: Mapping[str, Any], answer: str) -> tuple[bool, dict]:
        return self.member(task).verify(task, answer)

    def demonstration(self, task: Mapping[str, Any]) -> list[Message]:
        return self.member(task).demonstration(task)

    def direct_demonstration(self, task: Mapping[str, Any]) -> list[Message]:
        return self.member(task).direct_demonstration(task)

    def step(self, task: Mapping[str, Any], messages: Sequence[Message | Mapping[str, Any]]) -> EnvStep:
        return self.member(task).step(task, messages)

    def step_budget_s(self, messages: Sequence[Message | Mapping[str, Any]]) -> float:
        """The largest budget any member would give this turn (the pool's deadline has no task)."""
        msgs = as_messages(messages)
        return max(e.step_budget_s(msgs) for e in self.members.values())

    def final_answer(self, text: str) -> str | None:
        """The members' rule when they share one class, else the <answer> block (base rule)."""
        kinds = {type(e) for e in self.members.values()}
        if len(kinds) == 1:
            return next(iter(self.members.values())).final_answer(text)
        return super().final_answer(text)
