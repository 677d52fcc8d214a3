"""Fixtures shared by the tests and the benchmark scripts: tiny model configs, random params drawn on the
host (nothing to compile), a tiny SentencePiece tokenizer trained on an environment's demonstrations, a
tiny random-init policy run directory, and a tiny environment (`coin_test`). Nothing here downloads
anything.

Runs use the tiny environment with `tasks.env_modules=[vagent_jax.testing]`: each env worker process then
imports this module, so it imports jax (and the model code) only inside the functions that need them."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Mapping

from vagent_jax.envs.base import Environment, Message
from vagent_jax.envs.registry import register_env
from vagent_jax.models.config import ModelConfig

# One layer, two heads: the smallest model every code path accepts (GQA: 2 query heads share 1 KV head).
TINY_MODEL = dict(vocab_size=384, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64,
                  max_seq_len=512)


def tiny_model_config(**overrides: Any) -> ModelConfig:
    """TINY_MODEL with `overrides` (any ModelConfig field)."""
    return ModelConfig(**{**TINY_MODEL, **overrides})


def random_params(cfg: ModelConfig, seed: int = 0, *, std: float | None = None, norm_std: float = 0.0) -> Any:
    """Params in init_params' tree drawn with numpy (eval_shape compiles nothing; the threefry init takes
    seconds to compile on CPU): weights N(0, std) (default cfg.init_std), norm scales 1 + N(0, norm_std)
    (exactly 1 when norm_std is 0). Leaves are drawn in tree order from one generator seeded by `seed`."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from vagent_jax.models.transformer import init_params

    rng = np.random.default_rng(seed)
    w_std = cfg.init_std if std is None else std

    def draw(path: Any, leaf: jax.ShapeDtypeStruct) -> jax.Array:
        if "norm" in jax.tree_util.keystr(path):
            x = np.ones(leaf.shape) if norm_std == 0 else 1.0 + rng.normal(0.0, norm_std, leaf.shape)
        else:
            x = rng.normal(0.0, w_std, leaf.shape)
        return jnp.asarray(x, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, jax.eval_shape(lambda: init_params(cfg, jax.random.key(0))))


def tiny_tokenizer(out_dir: str | Path, vocab_size: int = TINY_MODEL["vocab_size"], env: str = "calculator",
                   num_tasks: int = 40) -> Any:
    """A SentencePiece tokenizer in out_dir trained on `num_tasks` demonstrations of `env` (seconds)."""
    from vagent_jax.envs import get_env
    from vagent_jax.tokenizer_train import train_sentencepiece

    e = get_env(env)
    texts = [m.content for t in e.generate_tasks(num_tasks, 0, 1) for m in e.demonstration(t)]
    return train_sentencepiece(texts, Path(out_dir), vocab_size=vocab_size)


def tiny_policy_dir(run_dir: str | Path, step: int = 3, **model_overrides: Any) -> ModelConfig:
    """A policy run directory (policy.json, tokenizer/, one orbax checkpoint at `step`) of a random-init
    tiny model whose vocabulary covers its tiny calculator tokenizer; returns the model config."""
    import jax

    from vagent_jax.sharding import MeshConfig, make_mesh
    from vagent_jax.train.checkpoint import Checkpointer, CheckpointOptions
    from vagent_jax.train.optimizer import OptimizerConfig
    from vagent_jax.train.policy_dir import CHECKPOINT_DIR, write_policy_meta
    from vagent_jax.train.train_state import create_train_state

    run_dir = Path(run_dir)
    model = tiny_model_config(**model_overrides)
    tok = tiny_tokenizer(run_dir / "tokenizer", vocab_size=model.vocab_size)
    model = tiny_model_config(**{**model_overrides, "vocab_size": max(model.vocab_size, tok.vocab_size)})
    opt = OptimizerConfig()
    write_policy_meta(run_dir, model, opt, "chatml", run_dir / "tokenizer")
    mesh = make_mesh(MeshConfig(), devices=jax.devices()[:1])
    state = create_train_state(model, opt, mesh, jax.random.key(0))
    with Checkpointer(run_dir / CHECKPOINT_DIR, CheckpointOptions(async_save=False)) as ckpt:
        ckpt.save(step, state, extra={"stage": "test"}, force=True)
        ckpt.wait_until_finished()
    return model


@register_env("coin_test")
class CoinEnv(Environment):
    """The tiny single-turn environment of the RL loop tests: say the hidden letter ("a" or "b"); the prompt
    shows it two times in three, else "?". After a short SFT a policy copies visible hints and guesses on
    "?", so rollout groups carry reward signal without a long training run."""

    name = "coin_test"
    max_turns = 1
    system_prompt = "Answer with <answer>LETTER</answer>."

    def prompt(self, task: Mapping[str, Any]) -> str:
        return f"Letter: {task['hint']}"

    def verify(self, task: Mapping[str, Any], answer: str) -> tuple[bool, dict]:
        return answer.strip() == task["target"], {}

    def generate_tasks(self, n: int, seed: int, difficulty: int = 1) -> list[dict]:
        rng = random.Random(f"coin/{seed}/{difficulty}")
        out = []
        for _ in range(n):
            target = rng.choice("ab")
            out.append({"target": target, "hint": target if rng.random() < 2 / 3 else "?"})
        return out

    def demonstration(self, task: Mapping[str, Any]) -> list[Message]:
        return self.initial_messages(task) + [Message("assistant", f"<answer>{task['target']}</answer>")]


@register_env("ten_questions")
class TenQuestionsEnv(Environment):
    """Ten distinct questions drawn at random: a task space too small for held-out tasks unseen in training."""

    name = "ten_questions"

    def prompt(self, task: Mapping[str, Any]) -> str:
        return f"What is {task['x']} + 1?"

    def verify(self, task: Mapping[str, Any], answer: str) -> tuple[bool, dict]:
        return answer.strip() == str(task["x"] + 1), {}

    def generate_tasks(self, n: int, seed: int, difficulty: int = 1) -> list[dict]:
        rng = random.Random(f"ten/{seed}/{difficulty}")
        return [{"x": rng.randrange(10)} for _ in range(n)]
