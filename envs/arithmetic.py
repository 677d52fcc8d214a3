"""Arithmetic with a scratchpad: one turn, the model works in <think> and answers in <answer>.

The verifier is exact: the answer must be a plain number (integer, decimal or fraction a/b, thousands
commas allowed) whose value equals the expression's exact value.
"""
from __future__ import annotations

import random
import re
from fractions import Fraction
from typing import Any, Mapping

from vagent_jax.envs.base import Environment, Message
from vagent_jax.envs.registry import register_env
from vagent_jax.envs.safe_math import evaluate, format_number

_PLAIN_NUMBER_RE = re.compile(r"^[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?$|^[+-]?\d+/\d+$")


def random_expression(rng: random.Random, n_ops: int, max_operand: int, ops: str = "+-*") -> str:
    """A random parenthesised expression with `n_ops` binary operators over operands in [1, max_operand]."""
    if n_ops == 0:
        return str(rng.randint(1, max_operand))
    left = rng.randint(0, n_ops - 1)
    a = random_expression(rng, left, max_operand, ops)
    b = random_expression(rng, n_ops - 1 - left, max_operand, ops)
    op = rng.choice(ops)
    a = a if left == 0 else f"({a})"
    b = b if n_ops - 1 - left == 0 else f"({b})"
    return f"{a} {op} {b}"


def parse_plain_number(text: str) -> Fraction | None:
    """Exact value of a plain number string ("1,234", "-2.5", "3/4"), or None if it is not one."""
    s = text.strip().replace(" ", "")
    if not _PLAIN_NUMBER_RE.match(s):
        return None
    s = s.replace(",", "")
    if "/" in s:
        p, q = s.split("/")
        return None if int(q) == 0 else Fraction(int(p), int(q))
    return Fraction(s)


def verify_plain_number(task: Mapping[str, Any], answer: str) -> tuple[bool, dict]:
    """Exact check of a plain-number answer against task["answer"] (the arithmetic and calculator verifier)."""
    value = parse_plain_number(answer)
    if value is None:
        return False, {"reason": "answer is not a plain number"}
    return value == Fraction(task["answer"]), {}


def task_seed(name: str, seed: int, difficulty: int) -> random.Random:
    """A deterministic RNG for (environment, seed, difficulty); string seeds hash with SHA-512."""
    return random.Random(f"{name}/{seed}/{difficulty}")


def check_gen_args(name: str, n: int, difficulty: int, max_difficulty: int) -> None:
    """Reject a bad task count or difficulty for generator `name`."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"{name}.generate_tasks: n must be a non-negative int, got {n!r}")
    if not isinstance(difficulty, int) or not 1 <= difficulty <= max_difficulty:
        raise ValueError(f"{name}.generate_tasks: difficulty must be in 1..{max_difficulty}, got {difficulty!r}")


@register_env("arithmetic")
class ArithmeticEnv(Environment):
    """Single-turn exact arithmetic; the demonstration writes every operation in the scratchpad."""

    name = "arithmetic"
    max_turns = 1
    system_prompt = "Solve the problem. Reason inside <think>...</think>, then give <answer>NUMBER</answer>."

    def prompt(self, task: Mapping[str, Any]) -> str:
        return f"Compute {task['expression']}. Give the exact value as an integer, decimal or reduced fraction."

    def verify(self, task: Mapping[str, Any], answer: str) -> tuple[bool, dict]:
        return verify_plain_number(task, answer)

    def generate_tasks(self, n: int, seed: int, difficulty: int = 1) -> list[dict]:
        """difficulty d: d+1 operators over operands up to 10**min(d, 3); + - * only (integer results)."""
        check_gen_args(self.name, n, difficulty, 5)
        rng = task_seed(self.name, seed, difficulty)
        tasks = []
        for _ in range(n):
            expr = random_expression(rng, difficulty + 1, 10 ** min(difficulty, 3))
            tasks.append({"expression": expr, "answer": format_number(evaluate(expr).value)})
        return tasks

    def demonstration(self, task: Mapping[str, Any]) -> list[Message]:
        ev = evaluate(task["expression"])
        scratch = "\n".join(ev.steps)
        turn = f"<think>\n{scratch}\n</think>\n<answer>{format_number(ev.value)}</answer>"
        return self.initial_messages(task) + [Message("assistant", turn)]
