"""Math answer environment: one turn, the final answer found by the math answer rules, verified exactly.

The final answer is the last \\boxed{} or <answer>, else a statement ("The answer is 3/4."), else the
whole turn when it is only an expression (envs/answer_extraction.py). Tasks carry a verification mode:
"equivalent" accepts any equal form (1/2, 2/4, 0.5, \\frac{1}{2}); "simplest" (the prompt asks for
simplest form) also rejects forms such as 2/4 or 0.5 (envs/math_verifier.py).
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any, Mapping

from vagent_jax.envs.answer_extraction import extract_answer
from vagent_jax.envs.arithmetic import check_gen_args, task_seed
from vagent_jax.envs.base import Environment, Message
from vagent_jax.envs.math_verifier import MODES, verify_math
from vagent_jax.envs.registry import register_env
from vagent_jax.envs.safe_math import format_number


def latex_number(x: Fraction) -> str:
    """LaTeX of an exact value: integers plain, other values as \\frac{p}{q} with the sign in front."""
    if x.denominator == 1:
        return str(x.numerator)
    sign = "-" if x < 0 else ""
    return f"{sign}\\frac{{{abs(x.numerator)}}}{{{x.denominator}}}"


@register_env("math_answer")
class MathAnswerEnv(Environment):
    """Fraction sums, percentages and linear equations with exact answers."""

    name = "math_answer"
    max_turns = 1
    accept_boxed = True
    system_prompt = "Solve the problem. Reason step by step, then put the final answer in \\boxed{}."

    def prompt(self, task: Mapping[str, Any]) -> str:
        suffix = " Give the answer as a fraction in simplest form." if task["mode"] == "simplest" else ""
        return task["question"] + suffix

    def final_answer(self, text: str) -> str | None:
        """The math answer rules' final answer, as text that extracts back to the same values."""
        found = extract_answer(text)
        return None if found is None else found.text

    def verify(self, task: Mapping[str, Any], answer: str) -> tuple[bool, dict]:
        mode = task.get("mode", "equivalent")
        if mode not in MODES:
            raise ValueError(f"math_answer task field 'mode': {mode!r} is not one of {MODES}")
        return verify_math(answer, task["answer"], mode), {"mode": mode}

    def generate_tasks(self, n: int, seed: int, difficulty: int = 1) -> list[dict]:
        """difficulty d: operands up to 6*d; kinds rotate among fraction sums, percentages, linear equations."""
        check_gen_args(self.name, n, difficulty, 5)
        rng = task_seed(self.name, seed, difficulty)
        hi = 6 * difficulty
        tasks = []
        for _ in range(n):
            kind = rng.choice(("frac_add", "percent", "linear"))
            if kind == "frac_add":
                a, b, c, d = (rng.randint(1, hi + 2) for _ in range(4))
                x, y = Fraction(a, b + 1), Fraction(c, d + 1)
                value = x + y
                question = f"Compute {a}/{b + 1} + {c}/{d + 1}."
                steps = f"{a}/{b + 1} + {c}/{d + 1} = {(a * (d + 1) + c * (b + 1))}/{(b + 1) * (d + 1)}"
            elif kind == "percent":
                p, q = rng.randint(1, 20) * 5, rng.randint(1, 40 * difficulty)
                value = Fraction(p * q, 100)
                question = f"What is {p}% of {q}?"
                steps = f"{p}/100 * {q} = {p * q}/100"
            else:
                a, b, c = rng.randint(2, hi + 1), rng.randint(-hi, hi), rng.randint(-hi, hi)
                value = Fraction(c - b, a)
                question = f"Solve for x: {a}x + ({b}) = {c}."
                steps = f"x = ({c} - ({b}))/{a} = {c - b}/{a}"
            simplest = value.denominator != 1 and rng.random() < 0.5
            tasks.append({"question": question, "answer": format_number(value),
                          "mode": "simplest" if simplest else "equivalent", "steps": steps})
        return tasks

    def demonstration(self, task: Mapping[str, Any]) -> list[Message]:
        value = Fraction(task["answer"])
        think = f"<think>\n{task['steps']} = {format_number(value)}\n</think>"
        turn = f"{think}\nThe answer is \\boxed{{{latex_number(value)}}}."
        return self.initial_messages(task) + [Message("assistant", turn)]
