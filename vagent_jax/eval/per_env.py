"""Held-out pass@1 per environment of a mixture (`vagent eval` with tasks.mix): the tasks grouped by
their member (`mix_env`), pass@1 = the mean over tasks of c/k, with a Wilson interval over the samples."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

from vagent_jax.envs.mixture import MEMBER_KEY
from vagent_jax.eval.estimators import wilson_interval


def per_env_pass_at_1(tasks: Sequence[dict], correct: Sequence[Sequence[bool]]) -> dict[str, dict[str, Any]]:
    """{member: {tasks, samples, pass@1, ci95}} for tasks that carry a member tag ({} otherwise)."""
    groups: dict[str, list[Sequence[bool]]] = defaultdict(list)
    for task, c in zip(tasks, correct):
        if task.get(MEMBER_KEY) is not None:
            groups[str(task[MEMBER_KEY])].append(c)
    out = {}
    for name, rows in sorted(groups.items()):
        hits, total = sum(sum(bool(x) for x in r) for r in rows), sum(len(r) for r in rows)
        p = sum(sum(bool(x) for x in r) / len(r) for r in rows) / len(rows)
        out[name] = {"tasks": len(rows), "samples": total, "pass@1": p, "ci95": list(wilson_interval(hits, total))}
    return out


def format_per_env(per_env: dict[str, dict[str, Any]]) -> str:
    """Lines `env  pass@1  [lo, hi]  (tasks)` for the eval table."""
    if not per_env:
        return ""
    w = max(len(k) for k in per_env)
    lines = ["per environment (pass@1, Wilson 95%):"]
    for k, v in per_env.items():
        lo, hi = v["ci95"]
        lines.append(f"  {k:<{w}}  {v['pass@1']:.4f}  [{lo:.4f}, {hi:.4f}]  ({v['tasks']} tasks)")
    return "\n".join(lines)
