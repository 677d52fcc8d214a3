"""The peers' RL-step workload (../shared/peers) wired into the RL loop's own `RLTrainer.collect` and
`RLTrainer.update`, for scripts/bench_rl_step.py: a byte BPE tokenizer, a random policy, an in-process
environment (trivial reward, no worker processes) and call timers around the engine's and the update's
device programs. The trainer is RLTrainer's own constructor over in-memory parts (a random train state,
the tokenizer, a task list) rather than `RLTrainer.from_config` over a run directory, so no policy has
to be trained or written first; the methods that run are the loop's own."""
from __future__ import annotations

import collections
import dataclasses
import random
import tempfile
import time
from typing import Any, Callable, Hashable, Mapping, Sequence

import jax

from vagent_jax.chat_template import render_chat
from vagent_jax.data.task_source import TaskConfig
from vagent_jax.engine import EngineConfig, SamplingConfig
from vagent_jax.envs.base import EnvStep, Environment, Message, as_messages
from vagent_jax.envs.registry import get_env, register_env
from vagent_jax.jobs.rl import RLConfig, RLTrainer
from vagent_jax.models.config import ModelConfig
from vagent_jax.rl.policy_loss import PolicyLossConfig
from vagent_jax.seeds import Purpose, purpose_key
from vagent_jax.sharding import MeshConfig, make_mesh
from vagent_jax.tokenizer_train import train_byte_bpe
from vagent_jax.train.optimizer import OptimizerConfig
from vagent_jax.train.train_state import create_train_state

BENCH_ENV = "bench_sum"


@dataclasses.dataclass(frozen=True)
class Workload:
    """Shapes of one benchmark workload."""

    name: str
    model: ModelConfig
    prompts: int  # prompts per step
    group: int  # samples per prompt
    gen: int  # new tokens per rollout


PEER_SHAPE = Workload("peers (qwen2 d256 L4, 8x8 rollouts, 32 new)", ModelConfig(
    family="qwen2", vocab_size=515, d_model=256, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=64, d_ff=1024,
    qkv_bias=True, tie_embeddings=True, max_seq_len=512), prompts=8, group=8, gen=32)
QUICK_SHAPE = Workload("quick", ModelConfig(
    family="qwen2", vocab_size=515, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64,
    qkv_bias=True, tie_embeddings=True, max_seq_len=128), prompts=2, group=4, gen=8)


@register_env(BENCH_ENV)
class SumEnv(Environment):
    """`a+b=`: the answer is the sum (the peers' prompts); no system prompt, no tools."""

    name = BENCH_ENV
    max_turns = 1
    system_prompt = ""

    def prompt(self, task: Mapping[str, Any]) -> str:
        return f"{task['a']}+{task['b']}="

    def verify(self, task: Mapping[str, Any], answer: str) -> tuple[bool, dict]:
        return answer.strip() == str(task["a"] + task["b"]), {}

    def final_answer(self, text: str) -> str | None:
        return text

    def generate_tasks(self, n: int, seed: int, difficulty: int = 1) -> list[dict]:
        rng = random.Random(f"bench_sum/{seed}")
        return [{"a": rng.randrange(100), "b": rng.randrange(100)} for _ in range(n)]


class InProcessEnvPool:
    """EnvWorkerPool's submit / poll / in_flight, stepping the environment in this process (trivial work:
    the benchmark times the loop, not worker IPC)."""

    def __init__(self) -> None:
        self._ready: list[tuple[Hashable, EnvStep]] = []

    def submit(self, request_id: Hashable, env_name: str, env_kwargs: Mapping[str, Any],
               task: Mapping[str, Any], messages: Sequence[Message | Mapping[str, Any]]) -> None:
        """Step the environment now; the result waits for the next poll."""
        self._ready.append((request_id, get_env(env_name, **env_kwargs).step(task, as_messages(messages))))

    def poll(self, timeout: float = 0.0) -> list[tuple[Hashable, EnvStep]]:
        """Every finished step (never waits: they finished at submit)."""
        out, self._ready = self._ready, []
        return out

    def in_flight(self) -> int:
        return len(self._ready)

    def close(self) -> None:
        self._ready = []


class ListTaskIterator:
    """The ShardedTaskIterator calls collect makes (first_index, take) over one process's task list."""

    def __init__(self, tasks: list[dict]) -> None:
        self.tasks, self.pos = tasks, 0

    def first_index(self, n: int) -> int:
        return 0

    def take(self, n: int) -> list[dict]:
        out = [self.tasks[(self.pos + i) % len(self.tasks)] for i in range(n)]
        self.pos += n
        return out


def build_trainer(shape: Workload, updates_per_batch: int = 1,
                  unroll_layers: bool | None = None) -> tuple[RLTrainer, InProcessEnvPool, int]:
    """(trainer, pool, longest rendered prompt in tokens) for `shape`: the tokenizer is a byte BPE trained on
    the task texts (as the peers' is; fewer ids than the model's 515 rows, which is allowed)."""
    env = get_env(BENCH_ENV)
    # the task texts and the template's role words (so "user" / "assistant" are one token each)
    corpus = [f"{a}+{b}={a + b}" for a in range(100) for b in range(100)] + ["user\n", "assistant\n"] * 5000
    with tempfile.TemporaryDirectory() as d:
        tok = train_byte_bpe(corpus, d, vocab_size=shape.model.vocab_size)
    tasks = env.generate_tasks(4096, seed=0)
    prompt_tokens = max(len(render_chat([m.to_dict() for m in env.initial_messages(t)], tok, "chatml", True)[0])
                        for t in tasks)
    rows = shape.prompts * shape.group
    ecfg = EngineConfig(batch_slots=rows, max_len=prompt_tokens + shape.gen + 1, max_new_tokens=shape.gen,
                        chunk_steps=16, min_prefill_bucket=8, sampling=SamplingConfig(temperature=1.0))
    cfg = RLConfig(init_from="(in memory)", tasks=TaskConfig(env=BENCH_ENV), prompts_per_step=shape.prompts,
                   group_size=shape.group, dynamic_sampling=False, loss=PolicyLossConfig(eps_low=0.2, eps_high=0.28),
                   updates_per_batch=updates_per_batch, engine=ecfg,
                   optimizer=OptimizerConfig(lr=1e-5, warmup_steps=0, schedule="constant"))
    mesh = make_mesh(MeshConfig(), devices=jax.devices()[:1])
    state = create_train_state(shape.model, cfg.optimizer, mesh, purpose_key(cfg.seed, Purpose.PARAMS))
    trainer = RLTrainer(cfg, shape.model, state, tok, "chatml", mesh, lambda level: ListTaskIterator(tasks),
                        l_max=ecfg.max_new_tokens, unroll_layers=unroll_layers)  # one env turn: L_max = the budget
    return trainer, InProcessEnvPool(), prompt_tokens


class CallTimers:
    """Seconds and call counts per name, for wrapped device programs."""

    def __init__(self) -> None:
        self.seconds: collections.Counter = collections.Counter()
        self.counts: collections.Counter = collections.Counter()

    def clear(self) -> None:
        self.seconds.clear()
        self.counts.clear()

    def total(self, name: str) -> float:
        return float(self.seconds[name])

    def calls(self, name: str) -> int:
        return int(self.counts[name])

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """fn timed to completion of its outputs."""
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = jax.block_until_ready(fn(*args, **kwargs))
            self.seconds[name] += time.perf_counter() - t0
            self.counts[name] += 1
            return out
        return timed


def timed_engine(trainer: RLTrainer) -> CallTimers:
    """Wrap the engine's prefill / decode-chunk / row programs and the update's step and log-prob pass."""
    t = CallTimers()
    e = trainer.engine
    e._prefill, e._decode, e._row = t.wrap("prefill", e._prefill), t.wrap("decode", e._decode), t.wrap("row", e._row)
    trainer.rl_step = t.wrap("update", trainer.rl_step)
    if trainer.logprobs is not None:
        trainer.logprobs = t.wrap("logprobs", trainer.logprobs)
    return t
