"""The host queue between the decode engine and the environment workers: multi-turn agent rollouts.

Every trajectory is a request in the engine. When its assistant turn ends on a stop token, the turn's text
goes to the EnvWorkerPool and the engine goes on decoding the other slots; when the observation comes back
it is rendered with the chat template and prefilled into the same slot, which resumes. Turns cut by the
token budget, the cache end, DeepConf or non-finite logits end the trajectory with reward 0 (truncated).
Environment faults arrive as a done EnvStep with reward 0 and an error tag: one trajectory lost, never the run.
"""
from __future__ import annotations

import dataclasses
import time
from collections import Counter
from typing import Any, Mapping, Sequence

from vagent_jax.chat_template import render_chat, render_turn_suffix
from vagent_jax.envs import EnvWorkerPool, Message, Reward, get_env
from vagent_jax.sampling.engine import DecodeEngine, Trajectory
from vagent_jax.tokenizer import Tokenizer

TRUNCATING = ("max_new_tokens", "max_length", "deepconf", "nonfinite")


@dataclasses.dataclass
class RolloutResult:
    """One finished trajectory with its verified reward and conversation."""

    task: dict
    sample_index: int
    trajectory: Trajectory
    reward: Reward
    messages: list[Message]
    turns: int
    tool_calls: int
    truncated: bool
    error: str | None


@dataclasses.dataclass
class _Live:
    task: dict
    sample_index: int
    messages: list[Message]
    turns: int = 0
    tool_calls: int = 0


class RolloutRunner:
    """Runs groups of multi-turn rollouts for one environment through a DecodeEngine and an EnvWorkerPool."""

    def __init__(self, engine: DecodeEngine, tokenizer: Tokenizer, template: str, pool: EnvWorkerPool,
                 env_name: str, env_kwargs: Mapping[str, Any] | None = None):
        self.engine, self.tokenizer, self.template, self.pool = engine, tokenizer, template, pool
        self.env_name, self.env_kwargs = env_name, dict(env_kwargs or {})
        self.env = get_env(env_name, **self.env_kwargs)
        self.stats: Counter = Counter()

    def run(self, tasks: Sequence[dict], samples_per_task: int = 1) -> list[RolloutResult]:
        """Roll out every task `samples_per_task` times; results come back in (task, sample) order."""
        live: dict[tuple[int, int], _Live] = {}
        done: dict[tuple[int, int], RolloutResult] = {}
        t0 = time.perf_counter()
        for i, task in enumerate(tasks):
            msgs = list(self.env.initial_messages(task))
            ids, _ = render_chat([m.to_dict() for m in msgs], self.tokenizer, self.template, True)
            for j in range(samples_per_task):
                live[(i, j)] = _Live(task, j, list(msgs))
                self.engine.submit((i, j), ids)
        env_wait = 0.0
        while live:
            for turn in self.engine.step():
                rid = turn.request_id
                lv = live[rid]
                lv.turns += 1
                text = self.tokenizer.decode(turn.tokens, skip_special=True)
                lv.messages.append(Message("assistant", text))
                if turn.reason in TRUNCATING:
                    done[rid] = self._finish(rid, lv, Reward(0.0, False, False, ("truncated",)), True, turn.reason)
                    del live[rid]
                    continue
                self.pool.submit(rid, self.env_name, self.env_kwargs, lv.task, [m.to_dict() for m in lv.messages])
            idle = not self.engine._running and not self.engine._pending  # noqa: SLF001 (engine idle: wait on env)
            w0 = time.perf_counter()
            results = self.pool.poll(timeout=0.05 if idle else 0.0)
            env_wait += time.perf_counter() - w0 if idle else 0.0
            for rid, step in results:
                lv = live[rid]
                lv.tool_calls += step.tool_calls
                if step.done:
                    reward = step.reward or Reward(0.0, False, False, (step.error or "env_error",))
                    done[rid] = self._finish(rid, lv, reward, False, step.error)
                    del live[rid]
                else:
                    assert step.observation is not None
                    lv.messages.append(step.observation)
                    suffix = render_turn_suffix(self.template, step.observation.to_dict(), self.tokenizer)
                    self.engine.resume(rid, suffix)
        self.stats["wall_s"] += time.perf_counter() - t0
        self.stats["env_wait_s"] += env_wait
        return [done[k] for k in sorted(done)]

    def _finish(self, rid: Any, lv: _Live, reward: Reward, truncated: bool, error: str | None) -> RolloutResult:
        traj = self.engine.finish(rid)
        self.stats["trajectories"] += 1
        self.stats["generated_tokens"] += traj.num_generated
        if error:
            self.stats[f"errors/{error}"] += 1
        return RolloutResult(lv.task, lv.sample_index, traj, reward, lv.messages, lv.turns, lv.tool_calls,
                             truncated, error)
