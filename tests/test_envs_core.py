"""Parsing of tool calls and answers, tool validation and timeouts, and the safe arithmetic evaluator."""
import time
from fractions import Fraction

import pytest

from vagent_jax.envs.parsing import extract_final_answer, last_boxed, parse_tool_calls
from vagent_jax.envs.safe_math import ExpressionError, evaluate, format_number
from vagent_jax.envs.tools import Tool, ToolError, ToolTimeout, run_tool, validate_arguments


def test_parse_tool_calls_valid_and_malformed():
    text = ('a <tool_call>{"name": "calculator", "arguments": {"expression": "3*4"}}</tool_call> b '
            '<tool_call>{"name": "python", "arguments": "{\\"code\\": \\"print(1)\\"}"}</tool_call>'
            "<tool_call>{not json}</tool_call><tool_call>[1]</tool_call>"
            '<tool_call>{"arguments": {}}</tool_call><tool_call>{"name": "x", "arguments": 3}</tool_call>')
    p = parse_tool_calls(text)
    assert [(c.name, c.arguments) for c in p.calls] == [("calculator", {"expression": "3*4"}),
                                                        ("python", {"code": "print(1)"})]
    assert len(p.errors) == 4
    assert "not valid JSON" in p.errors[0] and "JSON object" in p.errors[1]
    assert "name" in p.errors[2] and "arguments" in p.errors[3]
    unclosed = parse_tool_calls('<tool_call>{"name": "calculator", "arguments": {}}')
    assert unclosed.calls == () and "unbalanced" in unclosed.errors[0]
    assert parse_tool_calls("no calls here") == parse_tool_calls("")


def test_final_answer_extraction():
    assert extract_final_answer("x <answer> 1 </answer> y <answer>2</answer>") == "2"
    assert extract_final_answer(r"so \boxed{\frac{1}{2}}") is None
    assert extract_final_answer(r"so \boxed{\frac{1}{2}}", accept_boxed=True) == r"\frac{1}{2}"
    assert extract_final_answer(r"<answer>\boxed{3}</answer>", accept_boxed=True) == "3"
    assert last_boxed(r"\boxed{1} then \boxed{\{1,2\}}") == r"\{1,2\}"
    assert last_boxed(r"\boxed{unclosed") is None


def _tool(fn, timeout_s=0.3):
    params = {"properties": {"x": {"type": "integer"}, "s": {"type": "string"}}, "required": ["x"]}
    return Tool("t", "test tool", params, timeout_s, fn)


def test_tool_argument_validation():
    tool = _tool(lambda x, s="": f"{x}{s}")
    assert validate_arguments(tool, {"x": 1}) is None
    assert "missing required argument 'x'" in validate_arguments(tool, {})
    assert "unknown argument 'y'" in validate_arguments(tool, {"x": 1, "y": 2})
    assert "must be integer" in validate_arguments(tool, {"x": "1"})
    assert "must be integer" in validate_arguments(tool, {"x": True})
    assert run_tool(tool, {"x": 2, "s": "a"}) == "2a"
    assert run_tool(tool, {"x": "2"}).startswith("error:")
    with pytest.raises(ValueError, match="timeout_s"):
        Tool("t", "", {"properties": {}}, 0, print)
    with pytest.raises(ValueError, match="required param 'z'"):
        Tool("t", "", {"properties": {}, "required": ["z"]}, 1, print)


def test_tool_faults_raise_and_timeouts_are_bounded():
    def boom(x):
        raise KeyError("bad")

    with pytest.raises(ToolError, match="KeyError"):
        run_tool(_tool(boom), {"x": 1})
    t0 = time.monotonic()
    with pytest.raises(ToolTimeout, match="timeout"):
        run_tool(_tool(lambda x: time.sleep(5)), {"x": 1})
    # the 0.3 s timeout cut the 5 s sleep; the bound leaves a loaded machine 3.7 s of slack and still
    # fails when the timeout does not fire
    assert time.monotonic() - t0 < 4.0
    long = run_tool(Tool("t", "", {"properties": {}}, 1, lambda: "x" * 10000, max_output_chars=100), {})
    assert long.startswith("x" * 100) and "truncated 9900" in long


def test_safe_math_exact_and_bounded():
    assert evaluate("1/3*3").value == 1
    assert evaluate("0.1 + 0.2").value == Fraction(3, 10)
    assert evaluate("2^10").value == 1024 and evaluate("7 // 2 + 7 % 2").value == 4
    assert evaluate("-(3 - 5) * 2").steps == ("3 - 5 = -2", "2 * 2 = 4")
    assert evaluate("(1 + 2) * 3").literals == (1, 2, 3)
    for bad, msg in [("__import__('os').system('x')", "not allowed"), ("1/0", "division by zero"),
                     ("9**9**9", "too large"), ("2**0.5", "non-integer exponent"), ("x + 1", "not allowed"),
                     ("1 +", "cannot parse"), ("1" * 600, "longer than"), ("+".join(["1"] * 150), "nodes")]:
        with pytest.raises(ExpressionError, match=msg):
            evaluate(bad)
    # refused by the size guard before any arithmetic: computed, the first takes ~0.5 s and the second
    # (10**100,000,000) minutes, so the generous 5 s bound (for a loaded machine) still catches a missing guard
    for huge, msg in [("(10**1000)**(10**3)", "power too large"), ("(10**1000)**(10**5)", "exponent 100000 too large")]:
        t0 = time.monotonic()
        with pytest.raises(ExpressionError, match=msg):
            evaluate(huge)
        assert time.monotonic() - t0 < 5.0


def test_format_number():
    assert [format_number(Fraction(a, b)) for a, b in [(12, 1), (5, 2), (-1, 8), (1, 3), (-7, 6)]] == [
        "12", "2.5", "-0.125", "1/3", "-7/6"]


def test_timeout_cannot_be_swallowed_by_tool_code():
    def stubborn():
        try:
            time.sleep(5)
        except Exception:
            return "swallowed"
        return "finished"

    with pytest.raises(ToolTimeout):
        run_tool(Tool("t", "", {"properties": {}}, 0.2, stubborn), {})
