"""The rollout tests' fault environment, in a module of its own so env workers import it in milliseconds
(not the test module, which imports jax and the engine)."""
from __future__ import annotations

import os
import signal

from vagent_jax.envs import Environment, Tool, register_env


def _boom() -> str:
    raise RuntimeError("tool bug")


def _die() -> str:
    os.kill(os.getpid(), signal.SIGKILL)
    return "never"


@register_env("rollout_fault_test")
class FaultEnv(Environment):
    """Answer <answer>ok</answer>; an `echo` tool that works, `boom` that raises, `die` that kills its worker."""

    name = "rollout_fault_test"
    max_turns = 3
    verify_timeout_s = 1.0

    def make_tools(self):
        none = {"properties": {}}
        return [Tool("echo", "", none, 1.0, lambda: "echoed"), Tool("boom", "", none, 1.0, _boom),
                Tool("die", "", none, 1.0, _die)]

    def prompt(self, task):
        return f"task {task['k']}: say ok"

    def verify(self, task, answer):
        return answer == "ok", {}
