"""Parsing of assistant turns: Hermes/Qwen-style tool calls and final answers.

Tool call:    <tool_call>{"name": "calculator", "arguments": {"expression": "3*4"}}</tool_call>
Final answer: <answer>...</answer>, and in math environments also the last \\boxed{...}.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    """One parsed tool call: the tool's name and its argument mapping."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolCallParse:
    """All well-formed calls of a turn, in order, and a description of each malformed one."""

    calls: tuple[ToolCall, ...]
    errors: tuple[str, ...]


def _parse_one(body: str) -> ToolCall | str:
    """Parse the JSON body of one <tool_call> block; a string result is the error description."""
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as e:
        return f"tool call is not valid JSON ({e.msg} at char {e.pos}): {body.strip()[:200]!r}"
    if not isinstance(obj, dict):
        return f"tool call must be a JSON object, got {type(obj).__name__}"
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return "tool call lacks a string 'name'"
    args = obj.get("arguments", {})
    if isinstance(args, str):  # some chat templates emit the arguments as a JSON string
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return f"tool call '{name}': 'arguments' is a string that is not JSON"
    if not isinstance(args, dict):
        return f"tool call '{name}': 'arguments' must be a JSON object, got {type(args).__name__}"
    extra = sorted(set(obj) - {"name", "arguments"})
    if extra:
        return f"tool call '{name}': unexpected keys {extra}"
    return ToolCall(name, args)


def parse_tool_calls(text: str) -> ToolCallParse:
    """Find every <tool_call>...</tool_call> block in `text`; report malformed and unclosed blocks."""
    calls: list[ToolCall] = []
    errors: list[str] = []
    for m in _TOOL_CALL_RE.finditer(text):
        parsed = _parse_one(m.group(1))
        (calls if isinstance(parsed, ToolCall) else errors).append(parsed)
    opened, closed = text.count("<tool_call>"), text.count("</tool_call>")
    if opened != closed:
        errors.append(f"unbalanced tool call tags: {opened} <tool_call> vs {closed} </tool_call>")
    return ToolCallParse(tuple(calls), tuple(errors))


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in `text`, with nested braces matched."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        return None
    i = starts[-1]
    depth = 1
    j = i
    while j < len(text):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
        j += 1
    return None


def extract_final_answer(text: str, accept_boxed: bool = False) -> str | None:
    """The final answer of a turn: the last <answer> block, else (if allowed) the last \\boxed{}."""
    found = _ANSWER_RE.findall(text)
    if found:
        ans = found[-1].strip()
        if accept_boxed:
            inner = last_boxed(ans)
            if inner is not None:
                return inner
        return ans
    if accept_boxed:
        return last_boxed(text)
    return None
