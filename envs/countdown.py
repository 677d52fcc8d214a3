"""Countdown: reach the target from the given numbers with + - * / and parentheses.

The verifier evaluates the expression exactly (safe_math) and checks each number literal against the
task's multiset: each given number at most as often as given, or exactly the given multiset when the
task says `use_all`. "expr = target" is accepted (the part before "=" is evaluated).
"""
from __future__ import annotations

from collections import Counter
from fractions import Fraction
from typing import Any, Mapping

from vagent_jax.envs.arithmetic import check_gen_args, random_expression, task_seed
from vagent_jax.envs.base import Environment, Message
from vagent_jax.envs.registry import register_env
from vagent_jax.envs.safe_math import ExpressionError, evaluate


def check_countdown(expression: str, numbers: list[int], target: int, use_all: bool) -> tuple[bool, str]:
    """(ok, reason): the expression uses the numbers as allowed and evaluates exactly to `target`."""
    expr = expression.split("=")[0].strip()
    if not expr:
        return False, "empty expression"
    try:
        ev = evaluate(expr)
    except ExpressionError as e:
        return False, f"invalid expression: {e}"
    if any(lit.denominator != 1 for lit in ev.literals):
        return False, "only the given integers may appear"
    used, given = Counter(int(x) for x in ev.literals), Counter(numbers)
    extra = used - given
    if extra:
        return False, f"numbers not available (or used too often): {sorted(extra.elements())}"
    if use_all and used != given:
        return False, f"unused numbers: {sorted((given - used).elements())}"
    if "**" in expr or "//" in expr or "%" in expr or "^" in expr:
        return False, "only + - * / are allowed"
    if ev.value != Fraction(target):
        return False, f"value {ev.value} != target {target}"
    return True, "ok"


@register_env("countdown")
class CountdownEnv(Environment):
    """Single-turn Countdown: <answer>(25 - 5) * 4</answer>."""

    name = "countdown"
    max_turns = 1
    system_prompt = "Solve the puzzle. Reason inside <think>...</think>, then give <answer>EXPRESSION</answer>."

    def prompt(self, task: Mapping[str, Any]) -> str:
        rule = "each number exactly once" if task["use_all"] else "each number at most once"
        return (f"Using the numbers {task['numbers']} ({rule}) and + - * / with parentheses, "
                f"write an expression equal to {task['target']}.")

    def verify(self, task: Mapping[str, Any], answer: str) -> tuple[bool, dict]:
        ok, reason = check_countdown(answer, list(task["numbers"]), int(task["target"]), bool(task["use_all"]))
        return ok, {"reason": reason}

    def generate_tasks(self, n: int, seed: int, difficulty: int = 1) -> list[dict]:
        """difficulty d: d+2 numbers (1..25 plus a large one of 25/50/75/100), positive integer target <= 1000."""
        check_gen_args(self.name, n, difficulty, 4)
        rng = task_seed(self.name, seed, difficulty)
        tasks = []
        while len(tasks) < n:
            k = difficulty + 2
            numbers = [rng.randint(1, 25) for _ in range(k - 1)] + [rng.choice((25, 50, 75, 100))]
            rng.shuffle(numbers)
            use_all = rng.random() < 0.5
            n_used = k if use_all else rng.randint(2, k)
            template = random_expression(rng, n_used - 1, 1, "+-*/")
            chosen = rng.sample(numbers, n_used)
            parts = template.split("1")
            expr = "".join(p + (str(chosen[i]) if i < n_used else "") for i, p in enumerate(parts))
            try:
                value = evaluate(expr).value
            except ExpressionError:
                continue
            if value.denominator != 1 or not 0 < value <= 1000:
                continue
            tasks.append({"numbers": numbers, "target": int(value), "use_all": use_all, "solution": expr})
        return tasks

    def demonstration(self, task: Mapping[str, Any]) -> list[Message]:
        expr = task["solution"]
        turn = f"<think>\n{expr} = {task['target']}\n</think>\n<answer>{expr}</answer>"
        return self.initial_messages(task) + [Message("assistant", turn)]

    def direct_demonstration(self, task: Mapping[str, Any]) -> list[Message]:
        """The expression at once, with no worked <think> step: the habit `sft.direct_demo_fraction` mixes
        in (a Countdown task has no `answer` key for the base rule)."""
        return self.initial_messages(task) + [Message("assistant", f"<answer>{task['solution']}</answer>")]
