"""Host-side metrics of a batch of verified rollouts (the `rollout/*` TensorBoard tags).

Reward and pass rate, response length, truncation, tool calls and turns, environment errors, and the
sampler's per-token entropy and DeepConf confidence, split by correct vs incorrect trajectories.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np


def _token_mean(results: Sequence[Any], field: str) -> float:
    vals = [getattr(r.trajectory, field)[r.trajectory.gen_mask] for r in results]
    vals = [v for v in vals if v.size]
    return float(np.concatenate(vals).mean()) if vals else float("nan")


def rollout_metrics(results: Sequence[Any], rewards: np.ndarray | None = None) -> dict[str, float]:
    """Scalars over RolloutResults; `rewards` (shaped) defaults to the verifier's rewards."""
    if not results:
        return {}
    r = np.asarray([x.reward.reward for x in results], np.float64) if rewards is None else np.asarray(rewards)
    correct = np.asarray([x.reward.correct for x in results], bool)
    lengths = np.asarray([x.trajectory.num_generated for x in results], np.float64)
    errors = Counter(x.error for x in results if x.error and not x.truncated)
    ok = [x for x, c in zip(results, correct) if c]
    bad = [x for x, c in zip(results, correct) if not c]
    out = {
        "reward_mean": float(r.mean()), "reward_std": float(r.std()), "pass_rate": float(correct.mean()),
        "format_ok": float(np.mean([x.reward.format_ok for x in results])),
        "response_length_mean": float(lengths.mean()), "response_length_max": float(lengths.max()),
        "truncation_rate": float(np.mean([x.truncated for x in results])),
        "tool_calls": float(np.mean([x.tool_calls for x in results])),
        "turns": float(np.mean([x.turns for x in results])),
        "env_errors": float(sum(errors.values())),
        "sampling_entropy": _token_mean(results, "entropy"),
        "confidence": _token_mean(results, "confidence"),
        "confidence_correct": _token_mean(ok, "confidence"),
        "confidence_incorrect": _token_mean(bad, "confidence"),
        "generated_tokens": float(lengths.sum()),
    }
    return out
