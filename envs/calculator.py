"""Calculator tool environment: the model calls `calculator`, reads the result, then answers.

The calculator evaluates arithmetic exactly and safely (AST walk with size bounds, see safe_math).
"""
from __future__ import annotations

from typing import Any, Mapping

from vagent_jax.envs.arithmetic import check_gen_args, random_expression, task_seed, verify_plain_number
from vagent_jax.envs.base import Environment, Message
from vagent_jax.envs.registry import register_env
from vagent_jax.envs.safe_math import ExpressionError, evaluate, format_number
from vagent_jax.envs.tools import Tool


def calculator(expression: str) -> str:
    """Exact value of an arithmetic expression, or an error line the model can read."""
    try:
        value = evaluate(expression).value
    except ExpressionError as e:
        return f"error: {e}"
    text = format_number(value)
    if "/" in text:
        text += f" (approximately {float(value):.10g})"
    return text


def calculator_tool(timeout_s: float = 2.0) -> Tool:
    """The `calculator` tool: {"expression": str} -> exact result."""
    return Tool(
        name="calculator",
        description="Evaluate an arithmetic expression exactly (+ - * / // % ** and parentheses).",
        params={"properties": {"expression": {"type": "string"}}, "required": ["expression"]},
        timeout_s=timeout_s,
        fn=calculator,
    )


@register_env("calculator")
class CalculatorEnv(Environment):
    """Multi-turn: large-number arithmetic meant to be solved with the calculator tool."""

    name = "calculator"
    max_turns = 4
    system_prompt = "Use the calculator tool, then give <answer>NUMBER</answer>."
    tool_listing = "brief"

    def __init__(self, max_turns: int | None = None, tool_timeout_s: float = 2.0) -> None:
        self._tool_timeout_s = tool_timeout_s
        super().__init__(max_turns)

    def make_tools(self) -> list[Tool]:
        return [calculator_tool(self._tool_timeout_s)]

    def prompt(self, task: Mapping[str, Any]) -> str:
        return f"What is {task['expression']}?"

    def verify(self, task: Mapping[str, Any], answer: str) -> tuple[bool, dict]:
        return verify_plain_number(task, answer)

    def generate_tasks(self, n: int, seed: int, difficulty: int = 1) -> list[dict]:
        """difficulty 1: one multiplication of two-digit operands ("37 * 85"); d >= 2: d - 1 operators of
        + - * / (exact division) over operands up to 10**(d+1) ("412 / 97", then "(4120 - 97) * 608"...)."""
        check_gen_args(self.name, n, difficulty, 5)
        rng = task_seed(self.name, seed, difficulty)
        n_ops, ops = (1, "*") if difficulty == 1 else (difficulty - 1, "+-*/")
        tasks = []
        while len(tasks) < n:
            expr = random_expression(rng, n_ops, 10 ** (difficulty + 1), ops)
            try:
                value = evaluate(expr).value
            except ExpressionError:
                continue
            tasks.append({"expression": expr, "answer": format_number(value)})
        return tasks

    def demonstration(self, task: Mapping[str, Any]) -> list[Message]:
        call = '<tool_call>{"name": "calculator", "arguments": {"expression": "%s"}}</tool_call>' % task["expression"]
        msgs = self.initial_messages(task) + [Message("assistant", call)]
        obs = self.step(task, msgs).observation
        if obs is None:
            raise RuntimeError(f"calculator demonstration got no observation for task {task!r}")
        return msgs + [obs, Message("assistant", f"<answer>{task['answer']}</answer>")]
