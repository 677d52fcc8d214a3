"""Pass@1 of a policy on held-out tasks through the real rollout path (engine + environment workers),
with a 95% Wilson interval: the number each demo stage reports."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vagent_jax.engine import EngineConfig
from vagent_jax.eval.estimators import wilson_interval
from vagent_jax.eval.policy_rollouts import sample_rollouts
from vagent_jax.rollout import RolloutResult
from vagent_jax.train.policy_dir import Policy
from vagent_jax.train.rollout_metrics import rollout_metrics


def policy_pass_rate(policy: Policy, tasks: Sequence[dict], env: str, engine: EngineConfig, *, seed: int = 0,
                     env_workers: int = 2, env_modules: Sequence[str] = (),
                     env_kwargs: dict | None = None) -> tuple[dict[str, Any], list[RolloutResult]]:
    """One sample per task; returns ({pass_rate, pass_rate_95ci, n, rollout metrics...}, results)."""
    groups = sample_rollouts(policy, tasks, env, engine, 1, seed=seed, env_workers=env_workers, env_kwargs=env_kwargs,
                             env_modules=env_modules)
    results = [g[0] for g in groups]
    correct = int(np.sum([r.reward.correct for r in results]))
    lo, hi = wilson_interval(correct, len(results))
    metrics = rollout_metrics(results)
    return {"pass_rate": correct / len(results), "pass_rate_95ci": [lo, hi], "n": len(results),
            "correct": correct, "step": policy.step, **{k: v for k, v in metrics.items() if np.isfinite(v)}}, results
