"""A fixture environment for mixture tests whose pass rate does not depend on the policy: a task is
`free` (any turn passes) one time in two, else nothing passes. Next to a member the tiny policy never
solves (coin_test), the pass-rate band schedule sees one member inside its band and one outside, so the
weights move and the schedule's state matters to every later step."""
from __future__ import annotations

import random
from typing import Any, Mapping

from vagent_jax.envs.base import Environment, Message
from vagent_jax.envs.registry import register_env


@register_env("free_pass_test")
class FreePassEnv(Environment):
    """Pass where the task is free, whatever the answer."""

    name = "free_pass_test"
    max_turns = 1
    system_prompt = "Answer with <answer>LETTER</answer>."

    def prompt(self, task: Mapping[str, Any]) -> str:
        return f"Letter: {task['hint']}"

    def final_answer(self, text: str) -> str | None:
        return text  # every turn is an answer, so verify sees each one

    def verify(self, task: Mapping[str, Any], answer: str) -> tuple[bool, dict]:
        return bool(task["free"]), {}

    def generate_tasks(self, n: int, seed: int, difficulty: int = 1) -> list[dict]:
        rng = random.Random(f"free/{seed}/{difficulty}")
        return [{"hint": rng.choice("ab"), "free": rng.random() < 1 / 2} for _ in range(n)]

    def demonstration(self, task: Mapping[str, Any]) -> list[Message]:
        return self.initial_messages(task) + [Message("assistant", f"<answer>{task['hint']}</answer>")]
