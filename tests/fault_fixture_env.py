"""A two-turn environment that injects one fault per task, for soak tests of the env worker pool.

A rollout: the assistant calls the `note` tool (turn 1), then answers (turn 2). A task names at most one
fault and the turn it strikes in; the fault happens inside the worker, as the real ones would:
  env_raises       Environment.step raises                       -> error "env_error"
  hang             step ignores SIGALRM and sleeps for an hour   -> the pool's deadline: "timeout"
  segfault         the worker gets SIGSEGV                        -> "worker_died" (exit code -11)
  worker_sigkill   the worker gets SIGKILL                        -> "worker_died" (exit code -9)
  verifier_raises  verify raises (turn 2 only)                    -> "verifier_error"
"""
from __future__ import annotations

import os
import random
import signal
import time
from typing import Any, Mapping, Sequence

from vagent_jax.envs.base import EnvStep, Environment, Message, as_messages
from vagent_jax.envs.registry import register_env
from vagent_jax.envs.tools import Tool

FAULTS = ("env_raises", "hang", "segfault", "worker_sigkill", "verifier_raises")
# The pool's error tag each fault must come back with (worker_died is split by the exit code).
EXPECTED_TAG = {"env_raises": "env_error", "hang": "timeout", "segfault": "worker_died",
                "worker_sigkill": "worker_died", "verifier_raises": "verifier_error"}
NOTE_TIMEOUT_S = 1.0


def _note(text: str) -> str:
    return f"noted: {text}"


def fault_tasks(n: int, rates: Mapping[str, float], seed: int) -> list[dict]:
    """`n` tasks, round(rate * n) (at least 1 for a rate > 0) of each fault, shuffled by `seed`."""
    counts = {k: max(1, int(rates[k] * n + 0.5)) if rates.get(k, 0) > 0 else 0 for k in FAULTS}
    if sum(counts.values()) > n:
        raise ValueError(f"fault_tasks: {sum(counts.values())} faults do not fit in {n} tasks")
    kinds = [k for k in FAULTS for _ in range(counts[k])] + ["none"] * (n - sum(counts.values()))
    rng = random.Random(seed)
    rng.shuffle(kinds)
    return [{"id": i, "answer": str(i), "fault": kind,
             "fault_turn": 2 if kind == "verifier_raises" else rng.choice((1, 2))} for i, kind in enumerate(kinds)]


def _strike(fault: str) -> None:
    if fault == "env_raises":
        raise RuntimeError("injected environment fault")
    if fault == "hang":
        signal.signal(signal.SIGALRM, signal.SIG_IGN)  # no in-worker alarm can stop it: only the deadline
        time.sleep(3600)
    if fault == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if fault == "worker_sigkill":
        os.kill(os.getpid(), signal.SIGKILL)


@register_env("fault_test")
class FaultEnv(Environment):
    """Note, then answer the task's id; one injected fault per faulty task."""

    name = "fault_test"
    max_turns = 2
    verify_timeout_s = 1.0

    def make_tools(self) -> list[Tool]:
        return [Tool("note", "", {"properties": {"text": {"type": "string"}}}, NOTE_TIMEOUT_S, _note)]

    def prompt(self, task: Mapping[str, Any]) -> str:
        return f"note, then say {task['answer']}"

    def step(self, task: Mapping[str, Any], messages: Sequence[Message | Mapping[str, Any]]) -> EnvStep:
        turn = sum(1 for m in as_messages(messages) if m.role == "assistant")
        if task["fault"] not in ("none", "verifier_raises") and turn == task["fault_turn"]:
            _strike(task["fault"])
        return super().step(task, messages)

    def verify(self, task: Mapping[str, Any], answer: str) -> tuple[bool, dict]:
        if task["fault"] == "verifier_raises":
            raise ValueError("injected verifier fault")
        return answer == task["answer"], {}
