"""An env module whose import takes 3 s (as math-verify's or a plugin's can under load), to check that a
worker's start-up is not charged to the first request's deadline."""
from __future__ import annotations

import time
from typing import Any, Mapping

from vagent_jax.envs.base import Environment
from vagent_jax.envs.registry import register_env

IMPORT_SECONDS = 3.0
time.sleep(IMPORT_SECONDS)


@register_env("slow_import_echo")
class SlowImportEcho(Environment):
    """Single turn: correct iff the answer equals the task's target; verifies in microseconds."""

    name = "slow_import_echo"
    max_turns = 1
    system_prompt = "Answer with <answer>X</answer>."
    verify_timeout_s = 0.5

    def prompt(self, task: Mapping[str, Any]) -> str:
        return f"Say {task['target']}"

    def verify(self, task: Mapping[str, Any], answer: str) -> tuple[bool, dict]:
        return answer.strip() == task["target"], {}
