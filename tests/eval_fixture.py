"""Tiny fixtures for the eval and distill tests: the engine overrides their runs share and scripted
RolloutResults (the tiny policy directory is vagent_jax.testing.tiny_policy_dir)."""
from __future__ import annotations

import numpy as np

from vagent_jax.engine import Trajectory
from vagent_jax.envs import Message, Reward, get_env
from vagent_jax.rollout import RolloutResult

# 4 slots: with 4 tasks every pass (k samples, live DeepConf, GenSelect judge) prefills 4 rows of the same
# 512-token bucket, so the runs share one set of compiled programs
TINY_ENGINE = ["engine.batch_slots=4", "engine.max_len=512", "engine.max_new_tokens=8", "engine.chunk_steps=8",
               "num_devices=1", "env_workers=1"]


def scripted_result(task: dict, reply: str, correct: bool, conf: list[float], *, sample_index: int = 0,
                    truncated: bool = False, format_ok: bool = True, error: str | None = None) -> RolloutResult:
    """A finished one-turn rollout whose assistant turn is `reply` and whose generated tokens have the
    per-token confidences `conf` (two prompt tokens before them)."""
    n = len(conf)
    traj = Trajectory(request_id=(0, sample_index), tokens=np.arange(n + 2, dtype=np.int32),
                      gen_mask=np.array([False, False] + [True] * n),
                      logprob=np.zeros(n + 2, np.float32), sample_logprob=np.zeros(n + 2, np.float32),
                      entropy=np.zeros(n + 2, np.float32),
                      confidence=np.array([99.0, 99.0] + list(conf), np.float32),
                      reason="max_new_tokens" if truncated else "stop")
    reward = Reward(float(correct), bool(correct), format_ok, () if format_ok else ("malformed_tool_call",))
    msgs = get_env("calculator").initial_messages(task) + [Message("assistant", reply)]
    return RolloutResult(dict(task), sample_index, traj, reward, msgs, 1, 0, truncated, error)
