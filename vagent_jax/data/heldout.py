"""Held-out tasks that training never saw: a different seed alone does not give that where a generator has
few distinct questions (the demo's 8000 calculator tasks hold 5538 of the 8100 two-digit products, and 265
of its 500 seed-drawn held-out prompts were among them), so held-out draws are filtered by prompt.

A task's identity is its prompt (for a mixture: member and prompt). `unseen_tasks` keeps the first draws
whose prompt is neither a training prompt nor an earlier held-out one, drawing more (doubling, up to
MAX_DRAW_FACTOR x the count) until every member has its share, and stops naming `tasks.eval_tasks` when a
task space is too small for that.
"""
from __future__ import annotations

from typing import Any, Callable, Hashable, Mapping, Sequence

from vagent_jax.config import ConfigError
from vagent_jax.envs.mixture import MEMBER_KEY

MAX_DRAW_FACTOR = 32


def task_key(env: Any, task: Mapping[str, Any]) -> Hashable:
    """What makes two tasks the same question: the prompt the policy sees (and the mixture member)."""
    return (task.get(MEMBER_KEY), env.prompt(task))


def prompt_keys(env: Any, task_sets: Sequence[Sequence[Mapping[str, Any]]]) -> set[Hashable]:
    """Every task's key over the given task sets (len + integer indexing, like the TFDS-backed sources)."""
    return {task_key(env, s[i]) for s in task_sets for i in range(len(s))}


def unseen_tasks(env: Any, draw: Callable[[int], list[dict]], shares: Mapping[Any, int],
                 seen: set[Hashable]) -> list[dict]:
    """The first draws, in draw order, whose key is not in `seen` and not repeated, `shares[member]` per
    member (key None for a single environment); `draw(n)` returns n candidate tasks from a fixed seed."""
    n = sum(shares.values())
    while True:
        picked, keys, have = [], set(), dict.fromkeys(shares, 0)
        for t in draw(n):
            member, key = t.get(MEMBER_KEY), task_key(env, t)
            if key in seen or key in keys or have.get(member, 0) >= shares.get(member, 0):
                continue
            keys.add(key)
            have[member] += 1
            picked.append(t)
        if all(have[m] >= c for m, c in shares.items()):
            return picked
        if n >= MAX_DRAW_FACTOR * sum(shares.values()):
            short = {str(m): f"{have[m]} of {c}" for m, c in shares.items() if have[m] < c}
            raise ConfigError.at("tasks.eval_tasks", f"too few held-out tasks unseen in training after {n} draws "
                                 f"({short}): the task space is too small; widen the generator's range, lower "
                                 "the task counts, or set tasks.eval_unseen=false",
                                 related=("tasks.num_tasks", "tasks.eval_unseen"))
        n *= 2
