"""A tiny single-turn environment for RL loop tests: the task shows a hint ("a", "b" or "?") and the
verified answer is the task's hidden target. After a short SFT a policy copies visible hints and guesses
on "?", so rollout groups carry reward signal without a long training run."""
from __future__ import annotations

import random
from typing import Any, Mapping

from vagent_jax.envs.base import Environment, Message
from vagent_jax.envs.registry import register_env


@register_env("coin_test")
class CoinEnv(Environment):
    """Say the hidden letter; the hint shows it two times in three."""

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
