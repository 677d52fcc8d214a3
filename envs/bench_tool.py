"""Benchmark environment for the rollout host queue: every assistant turn is a call to a `wait` tool.

A random-weight policy never writes a well-formed <tool_call>, so this environment treats ANY assistant
turn that reaches it (the decode engine ended the turn on a stop token or stop sequence) as one call of
its `wait` tool: the tool sleeps `sleep_s` seconds in the worker process (standing in for a sandbox, a
web request or a slow verifier) and its result comes back as a "tool" observation, which the rollout
prefills into the slot. After `tool_calls` observations the next turn ends the episode with reward 1.
Not a built-in: processes that use it import this module (EnvWorkerPool(env_modules=[MODULE])).
"""
from __future__ import annotations

import functools
import time
from typing import Any, Mapping, Sequence

from vagent_jax.envs.base import EnvStep, Environment, Message, Reward, as_messages
from vagent_jax.envs.registry import register_env
from vagent_jax.envs.tools import Tool, format_tool_results, run_tool

MODULE = __name__
ENV_NAME = "bench_tool"


def wait_tool_fn(sleep_s: float) -> str:
    """Sleep `sleep_s` seconds (0: return at once) and say how long it took."""
    t0 = time.perf_counter()
    if sleep_s > 0:
        time.sleep(sleep_s)
    return f"waited {time.perf_counter() - t0:.3f}s"


@register_env(ENV_NAME)
class BenchToolEnv(Environment):
    """Fixed-length episodes of `tool_calls` tool calls (one per turn, whatever the turn says) + a final turn."""

    name = ENV_NAME
    system_prompt = "Benchmark agent: every turn calls the wait tool until the episode ends."

    def __init__(self, tool_calls: int = 2, sleep_s: float = 0.1) -> None:
        if not isinstance(tool_calls, int) or tool_calls < 0:
            raise ValueError(f"{ENV_NAME}: tool_calls must be an int >= 0, got {tool_calls!r}")
        if not sleep_s >= 0:
            raise ValueError(f"{ENV_NAME}: sleep_s must be >= 0, got {sleep_s!r}")
        self.tool_calls, self.sleep_s = tool_calls, float(sleep_s)
        super().__init__(max_turns=tool_calls + 1)

    def full_system_prompt(self) -> str:
        """Just the system prompt: no tool listing (a random policy reads nothing; shorter prompts)."""
        return self.system_prompt

    def make_tools(self) -> list[Tool]:
        return [Tool("wait", "Sleep for the benchmark's tool latency.", {"properties": {}},
                     timeout_s=max(1.0, 10.0 * self.sleep_s), fn=functools.partial(wait_tool_fn, self.sleep_s))]

    def prompt(self, task: Mapping[str, Any]) -> str:
        return f"Benchmark episode {task['id']}: write anything; each turn calls the wait tool."

    def verify(self, task: Mapping[str, Any], answer: str) -> tuple[bool, dict]:
        return True, {}

    def generate_tasks(self, n: int, seed: int, difficulty: int = 1) -> list[dict]:
        """`n` records {"id": seed * n + i}: the episode does not depend on the task."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"{ENV_NAME}.generate_tasks: n must be an int >= 0, got {n!r}")
        return [{"id": seed * n + i} for i in range(n)]

    def demonstration(self, task: Mapping[str, Any]) -> list[Message]:
        msgs = self.initial_messages(task)
        for k in range(self.tool_calls + 1):
            msgs.append(Message("assistant", f"turn {k}"))
            step = self.step(task, msgs)
            if step.done:
                break
            assert step.observation is not None
            msgs.append(step.observation)
        return msgs

    def step_budget_s(self, messages: Sequence[Message | Mapping[str, Any]]) -> float:
        """The wait tool's timeout: every turn before the last calls it."""
        return self.tools["wait"].timeout_s

    def step(self, task: Mapping[str, Any], messages: Sequence[Message | Mapping[str, Any]]) -> EnvStep:
        """Turn k <= tool_calls: run the wait tool and return its observation; afterwards: done, reward 1."""
        msgs = as_messages(messages)
        if not msgs or msgs[-1].role != "assistant":
            raise ValueError(f"{ENV_NAME}.step: messages must end with an assistant turn")
        n_turns = sum(1 for m in msgs if m.role == "assistant")
        if n_turns <= self.tool_calls:
            text = run_tool(self.tools["wait"], {})
            return EnvStep(Message("tool", format_tool_results([("wait", text)])), False, None, 1, None)
        return EnvStep(None, True, Reward(1.0, True, True, (), {"turns": n_turns}), 0, None)
