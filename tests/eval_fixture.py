"""Tiny fixtures for the eval and distill tests: a random-init policy run directory (SentencePiece tokenizer
trained on calculator text, a 1-layer model, one orbax checkpoint) and scripted RolloutResults."""
from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from vagent_jax.engine import Trajectory
from vagent_jax.envs import Message, Reward, get_env
from vagent_jax.models.config import ModelConfig
from vagent_jax.rollout import RolloutResult
from vagent_jax.sharding import MeshConfig, make_mesh
from vagent_jax.tokenizer_train import train_sentencepiece
from vagent_jax.train.checkpoint import Checkpointer, CheckpointOptions
from vagent_jax.train.optimizer import OptimizerConfig
from vagent_jax.train.policy_dir import CHECKPOINT_DIR, write_policy_meta
from vagent_jax.train.train_state import create_train_state

TINY_MODEL = dict(vocab_size=384, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64,
                  max_seq_len=512)
# 4 slots: with 4 tasks every pass (k samples, live DeepConf, GenSelect judge) prefills 4 rows of the same
# 512-token bucket, so the runs share one set of compiled programs
TINY_ENGINE = ["engine.batch_slots=4", "engine.max_len=512", "engine.max_new_tokens=8", "engine.chunk_steps=8",
               "num_devices=1", "env_workers=1"]


def make_tiny_policy(run_dir: Path, step: int = 3) -> ModelConfig:
    """A policy run directory with random weights; returns its model config."""
    env = get_env("calculator")
    texts = [m.content for t in env.generate_tasks(40, 0, 1) for m in env.demonstration(t)]
    tok = train_sentencepiece(texts, run_dir / "tokenizer", vocab_size=TINY_MODEL["vocab_size"])
    model = ModelConfig(**{**TINY_MODEL, "vocab_size": max(TINY_MODEL["vocab_size"], tok.vocab_size)})
    opt = OptimizerConfig()
    write_policy_meta(run_dir, model, opt, "chatml", run_dir / "tokenizer")
    mesh = make_mesh(MeshConfig(), devices=jax.devices()[:1])
    state = create_train_state(model, opt, mesh, jax.random.key(0))
    with Checkpointer(run_dir / CHECKPOINT_DIR, CheckpointOptions(async_save=False)) as ckpt:
        ckpt.save(step, state, jax.random.key(0), extra={"stage": "test"}, force=True)
        ckpt.wait_until_finished()
    return model


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
