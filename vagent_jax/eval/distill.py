"""The two filters of `vagent distill` (jobs/distill.py) over k policy rollouts per task: the chats of a
task's verifier-passing rollouts (rejection-sampled SFT data), and the tasks whose measured pass rate lies
strictly inside a band (the ones that carry a DAPO group signal), with the ids a JSONL task file needs."""
from __future__ import annotations

import json
from typing import Sequence

from vagent_jax.rollout import RolloutResult


def passing_conversations(group: Sequence[RolloutResult], *, require_format_ok: bool = True,
                          max_per_task: int = 0, dedupe: bool = True) -> list[list[dict[str, str]]]:
    """The chats of one task's verifier-passing rollouts (correct, not truncated, no env error, and
    format_ok if required), in sample order, deduplicated and capped at max_per_task (0 = no cap)."""
    out: list[list[dict[str, str]]] = []
    seen: set[str] = set()
    for r in group:
        if not r.reward.correct or r.truncated or r.error or (require_format_ok and not r.reward.format_ok):
            continue
        chat = [m.to_dict() for m in r.messages]
        key = json.dumps(chat, sort_keys=True)
        if dedupe and key in seen:
            continue
        seen.add(key)
        out.append(chat)
        if max_per_task and len(out) >= max_per_task:
            break
    return out


def filter_by_pass_rate(tasks: Sequence[dict], pass_rates: Sequence[float], low: float = 0.0,
                        high: float = 1.0) -> list[dict]:
    """Tasks with low < p < high (strict), each with `measured_pass_rate` = p added, in task order."""
    if len(tasks) != len(pass_rates):
        raise ValueError(f"filter_by_pass_rate: {len(tasks)} tasks but {len(pass_rates)} pass rates")
    return [dict(t, measured_pass_rate=float(p)) for t, p in zip(tasks, pass_rates) if low < p < high]


def with_ids(tasks: Sequence[dict], prefix: str) -> list[dict]:
    """Copies of the tasks, each with an `id` (kept when present, else f"{prefix}-{index}"), since a JSONL
    task file needs unique ids; a repeated id stops with an error naming it."""
    out, seen = [], set()
    for i, t in enumerate(tasks):
        task = dict(t)
        task.setdefault("id", f"{prefix}-{i}")
        if str(task["id"]) in seen:
            raise ValueError(f"task {i}: duplicate id {task['id']!r}; a JSONL task file needs unique ids")
        seen.add(str(task["id"]))
        out.append(task)
    return out
