"""Per-environment and per-criterion rollout metrics: `env/<name>/...` for each mixture member (the same
scalars as `rollout/`), and `rubric/<criterion>/mean` and `/pass_rate` over the trajectories a rubric
graded (a criterion passes at score >= 0.5)."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from vagent_jax.envs.mixture import MEMBER_KEY
from vagent_jax.envs.rubric import PASS_AT
from vagent_jax.train.rollout_metrics import rollout_metrics

PER_ENV_KEYS = ("reward_mean", "pass_rate", "sampling_entropy", "response_length_mean", "tool_calls", "turns",
                "truncation_rate", "env_errors", "format_ok")


def group_by_env(results: Sequence[Any]) -> dict[str, list[Any]]:
    """Results by their task's mixture member (none when the tasks are not from a mixture)."""
    groups: dict[str, list[Any]] = defaultdict(list)
    for r in results:
        name = r.task.get(MEMBER_KEY)
        if name is not None:
            groups[str(name)].append(r)
    return dict(groups)


def per_env_metrics(results: Sequence[Any]) -> dict[str, float]:
    """env/<name>/<key> for every member that has rollouts, plus env/<name>/rollouts (the count)."""
    out: dict[str, float] = {}
    for name, group in sorted(group_by_env(results).items()):
        m = rollout_metrics(group)
        out.update({f"env/{name}/{k}": m[k] for k in PER_ENV_KEYS})
        out[f"env/{name}/rollouts"] = float(len(group))
    return out


def rubric_metrics(results: Sequence[Any]) -> dict[str, float]:
    """rubric/<criterion>/mean and /pass_rate over the trajectories whose rubric scored that criterion."""
    scores: dict[str, list[float]] = defaultdict(list)
    for r in results:
        rub = r.reward.details.get("rubric") if isinstance(r.reward.details, dict) else None
        for name, s in (rub or {}).get("scores", {}).items():
            if s is not None:
                scores[name].append(float(s))
    out: dict[str, float] = {}
    for name, vals in sorted(scores.items()):
        v = np.asarray(vals)
        out[f"rubric/{name}/mean"] = float(v.mean())
        out[f"rubric/{name}/pass_rate"] = float((v >= PASS_AT).mean())
    return out
