"""env/<name>/ and rubric/<name>/ scalars of a batch of rollouts (hand-worked)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vagent_jax.envs import Reward
from vagent_jax.train.mix_metrics import per_env_metrics, rubric_metrics


@dataclasses.dataclass
class _Traj:
    gen_mask: np.ndarray
    entropy: np.ndarray
    confidence: np.ndarray

    @property
    def num_generated(self) -> int:
        return int(self.gen_mask.sum())


@dataclasses.dataclass
class _R:
    task: dict
    reward: Reward
    trajectory: _Traj
    tool_calls: int = 0
    turns: int = 1
    truncated: bool = False
    error: str | None = None


def _r(env, correct, n_tokens, rubric=None):
    details = {"rubric": {"scores": rubric}} if rubric else {}
    mask = np.ones(n_tokens, bool)
    return _R({"mix_env": env} if env else {}, Reward(float(correct), correct, True, (), details),
              _Traj(mask, np.full(n_tokens, 0.5), np.ones(n_tokens)))


def test_per_env_metrics_group_by_member():
    out = per_env_metrics([_r("a", True, 4), _r("a", False, 2), _r("b", True, 6), _r(None, True, 1)])
    assert out["env/a/pass_rate"] == 0.5 and out["env/a/response_length_mean"] == 3.0
    assert out["env/b/rollouts"] == 1.0 and out["env/a/rollouts"] == 2.0
    assert out["env/a/sampling_entropy"] == pytest.approx(0.5)
    assert not any(k.startswith("env/None") for k in out)


def test_rubric_metrics_mean_and_pass_rate():
    out = rubric_metrics([_r("a", True, 1, {"x": 1.0, "y": 0.2}), _r("a", True, 1, {"x": 0.4, "y": None}),
                          _r("a", True, 1)])
    assert out["rubric/x/mean"] == pytest.approx(0.7) and out["rubric/x/pass_rate"] == 0.5
    assert out["rubric/y/mean"] == pytest.approx(0.2) and out["rubric/y/pass_rate"] == 0.0  # pending: not counted
