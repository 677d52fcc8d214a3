"""Rubric criteria and their program graders; the reward of a graded trajectory.

A criterion has a name, a weight, an optional gate flag and one grader: a program (a function of the
task, the conversation and the environment's own outcome, returning a score in [0, 1]) or a judge
question (scored later by a judge model, vagent_jax/rl/judge.py). A criterion passes when its score is
>= 0.5. Reward = sum_i weight_i * score_i, and 0 when any gate criterion fails.

Program graders (`grader`, with `args`):
  verifier   1 when the environment's verifier accepted the answer (`score`: its partial credit instead)
  format     1 when the episode ended with an answer and no malformed tool call
  regex      1 when `pattern` matches (`target`: answer | response (last turn) | all turns; `must_match`)
  length     1 when all assistant text is within `max_chars` (and/or `max_words`)
  tool_use   1 when tool calls (of `tool`, if given) number in [`min_calls`, `max_calls`]
  python     `function: "module:name"` called as f(task, messages, outcome) -> float or bool
"""
from __future__ import annotations

import dataclasses
import importlib
import re
from typing import Any, Callable, Mapping, Sequence

from vagent_jax.config import ConfigError, require
from vagent_jax.envs.base import Message, Reward
from vagent_jax.envs.parsing import parse_tool_calls

PASS_AT = 0.5
Grader = Callable[[Mapping[str, Any], Sequence[Message], Reward], float]


@dataclasses.dataclass(frozen=True)
class CriterionConfig:
    """One rubric criterion: a program `grader` (with `args`) or a `judge` yes/no question."""

    name: str = ""
    weight: float = 1.0
    gate: bool = False  # failed (score < 0.5) => the trajectory's reward is 0
    grader: str = ""
    args: dict[str, Any] = dataclasses.field(default_factory=dict)
    judge: str = ""  # the yes/no question put to the judge model

    def validate(self) -> None:
        """Name, weight and exactly one grader; program args checked by building the grader."""
        require(bool(self.name) and re.fullmatch(r"[A-Za-z0-9_.-]+", self.name) is not None, "name",
                f"needs a name of letters, digits, _ . - (it is a TensorBoard tag), got {self.name!r}")
        require(self.weight >= 0, "weight", f"must be >= 0, got {self.weight}")
        require(bool(self.grader) != bool(self.judge), "grader",
                f"criterion {self.name!r} needs exactly one grader: a program (grader: one of "
                f"{sorted(PROGRAM_GRADERS)}) or a judge question (judge: ...)", related=("judge",))
        if self.grader:
            require(self.grader in PROGRAM_GRADERS, "grader", f"{self.grader!r} is not one of {sorted(PROGRAM_GRADERS)}")
            try:
                build_grader(self.grader, self.args)
            except (TypeError, ValueError, ImportError, AttributeError) as e:
                raise ConfigError.at("args", f"grader {self.grader!r}: {e}") from None


def check_rubric(criteria: Sequence[CriterionConfig]) -> None:
    """Unique names and a positive total weight (a rubric of zero weights rewards nothing)."""
    names = [c.name for c in criteria]
    require(len(set(names)) == len(names), "rubric", f"criterion names repeat: {names}")
    require(not criteria or sum(c.weight for c in criteria) > 0, "rubric", "the criteria's weights are all zero")


def _assistant(messages: Sequence[Message]) -> list[str]:
    return [m.content for m in messages if m.role == "assistant"]


def _regex(pattern: str, target: str = "response", must_match: bool = True) -> Grader:
    rx = re.compile(pattern)
    if target not in ("answer", "response", "all"):
        raise ValueError(f"target must be answer, response or all, got {target!r}")

    def grade(task: Mapping[str, Any], messages: Sequence[Message], outcome: Reward) -> float:
        if target == "answer":
            text = str(outcome.details.get("answer") or "")
        else:
            turns = _assistant(messages)
            text = (turns[-1] if turns else "") if target == "response" else "\n".join(turns)
        return float(bool(rx.search(text)) == bool(must_match))

    return grade


def _length(max_chars: int | None = None, max_words: int | None = None) -> Grader:
    if max_chars is None and max_words is None:
        raise ValueError("give max_chars and/or max_words")

    def grade(task: Mapping[str, Any], messages: Sequence[Message], outcome: Reward) -> float:
        text = "\n".join(_assistant(messages))
        ok = (max_chars is None or len(text) <= max_chars) and (max_words is None or len(text.split()) <= max_words)
        return float(ok)

    return grade


def _tool_use(tool: str | None = None, min_calls: int = 1, max_calls: int | None = None) -> Grader:
    def grade(task: Mapping[str, Any], messages: Sequence[Message], outcome: Reward) -> float:
        calls = [c for t in _assistant(messages) for c in parse_tool_calls(t).calls if tool is None or c.name == tool]
        return float(len(calls) >= min_calls and (max_calls is None or len(calls) <= max_calls))

    return grade


def _verifier(score: bool = False) -> Grader:
    return lambda task, messages, outcome: float(outcome.reward if score else outcome.correct)


def _format() -> Grader:
    return lambda task, messages, outcome: float(outcome.format_ok and "answer" in outcome.details)


def _python(function: str) -> Grader:
    module, _, attr = str(function).partition(":")
    if not module or not attr:
        raise ValueError(f"function must be 'module:name', got {function!r}")
    fn = getattr(importlib.import_module(module), attr)
    if not callable(fn):
        raise TypeError(f"{function} is not callable")
    return lambda task, messages, outcome: float(fn(task, messages, outcome))


PROGRAM_GRADERS: dict[str, Callable[..., Grader]] = {
    "verifier": _verifier, "format": _format, "regex": _regex, "length": _length, "tool_use": _tool_use,
    "python": _python,
}


def build_grader(kind: str, args: Mapping[str, Any]) -> Grader:
    """The program grader `kind` with keyword `args` (a TypeError names a wrong argument)."""
    return PROGRAM_GRADERS[kind](**dict(args))


def rubric_reward(criteria: Sequence[Mapping[str, Any]], scores: Mapping[str, float]) -> float:
    """sum_i w_i * s_i over the criteria, 0 when a gate criterion scores below 0.5 (module docstring)."""
    if any(c.get("gate") and scores[c["name"]] < PASS_AT for c in criteria):
        return 0.0
    return float(sum(float(c.get("weight", 1.0)) * scores[c["name"]] for c in criteria))


def clamp_score(value: float, name: str) -> float:
    """A grader's score as a float in [0, 1]; anything else is the grader's fault (ValueError)."""
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"rubric criterion {name!r} scored {v}, outside [0, 1]")
    return v
