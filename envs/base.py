"""Core types of a text-level, stateless environment: messages, rewards, steps, and the Environment base.

An environment never keeps per-episode state: `step(task, messages)` recomputes everything it needs from
the task record and the whole conversation, so any worker process can serve any request and a worker that
dies loses nothing. Multi-turn logic (tool calls, final answers, turn limit, format tracking) lives here
once; concrete environments supply tools, prompts, a generator, demonstrations and a verifier.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from vagent_jax.envs.parsing import ToolCallParse, extract_final_answer, parse_tool_calls
from vagent_jax.envs.tools import (
    Tool, ToolError, ToolTimeout, call_with_timeout, format_tool_results, run_tool, validate_arguments,
)

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Message:
    """One chat message; role is one of system/user/assistant/tool."""

    role: str
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"Message.role: {self.role!r} is not one of {ROLES}")
        if not isinstance(self.content, str):
            raise ValueError(f"Message.content: expected str, got {type(self.content).__name__}")

    def to_dict(self) -> dict[str, str]:
        """Plain dict form ({"role", "content"}) for chat templates and JSON."""
        return {"role": self.role, "content": self.content}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "Message":
        """Build from a {"role", "content"} mapping; a missing key is named in the error."""
        for key in ("role", "content"):
            if key not in d:
                raise ValueError(f"message dict lacks key '{key}': {dict(d)!r}")
        return Message(str(d["role"]), d["content"])


@dataclass(frozen=True)
class Reward:
    """Verified outcome of an episode: scalar reward, correctness, format validity, error tags, details."""

    reward: float
    correct: bool
    format_ok: bool
    errors: tuple[str, ...] = ()
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class EnvStep:
    """Result of one environment step: an observation to append (role "tool"), or done with a reward."""

    observation: Message | None
    done: bool
    reward: Reward | None
    tool_calls: int = 0
    error: str | None = None


def failed_step(error: str, detail: str = "", tool_calls: int = 0) -> EnvStep:
    """A terminal step with reward 0, used for faults (tool_error, timeout, worker_died, max_turns...)."""
    reward = Reward(0.0, False, False, (error,), {"detail": detail} if detail else {})
    return EnvStep(None, True, reward, tool_calls, error)


def as_messages(messages: Sequence[Message | Mapping[str, Any]]) -> list[Message]:
    """Accept Message objects or {"role", "content"} dicts and return Messages."""
    return [m if isinstance(m, Message) else Message.from_dict(m) for m in messages]


class Environment:
    """Base class of a stateless text environment with optional tools.

    Subclasses set `name`, `max_turns`, `tools` and implement `prompt(task)`, `verify(task, answer)`,
    `generate_tasks(n, seed, difficulty)` and `demonstration(task)`.
    Episode rules: a turn with an answer (`final_answer`: <answer>...</answer>, or \\boxed{...} where
    `accept_boxed`; math environments use the full math answer rules) ends the episode and is verified;
    a turn with tool calls gets a "tool" observation unless the turn limit is reached (then reward 0,
    error "max_turns"); a turn with neither ends the episode unanswered.
    A malformed tool call gets an observation describing the error and makes format_ok False at the end.
    A tool that raises or overruns its timeout ends the episode with reward 0 ("tool_error"/"timeout").
    """

    name: str = "base"
    max_turns: int = 1
    max_tool_calls_per_turn: int = 4
    verify_timeout_s: float = 5.0
    accept_boxed: bool = False
    system_prompt: str = ""
    # "json": every tool's JSON schema (the listing pretrained chat models know); "brief": name(args) only,
    # for policies trained from scratch, where each system-prompt token is paid on every sequence
    tool_listing: str = "json"

    def __init__(self, max_turns: int | None = None) -> None:
        if max_turns is not None:
            if not isinstance(max_turns, int) or max_turns < 1:
                raise ValueError(f"{self.name}: max_turns must be a positive int, got {max_turns!r}")
            self.max_turns = max_turns
        self.tools: dict[str, Tool] = {t.name: t for t in self.make_tools()}

    # ---- to override -------------------------------------------------------------------------------
    def make_tools(self) -> list[Tool]:
        """The tools this environment offers (none by default)."""
        return []

    def prompt(self, task: Mapping[str, Any]) -> str:
        """The user message that states the task."""
        raise TypeError(f"environment {self.name!r} does not define prompt()")

    def verify(self, task: Mapping[str, Any], answer: str) -> tuple[bool, dict]:
        """Check a final answer against the task; returns (correct, details)."""
        raise TypeError(f"environment {self.name!r} does not define verify()")

    def generate_tasks(self, n: int, seed: int, difficulty: int = 1) -> list[dict]:
        """`n` JSON-serialisable task records, deterministic given (seed, difficulty)."""
        raise TypeError(f"environment {self.name!r} does not define generate_tasks()")

    def demonstration(self, task: Mapping[str, Any]) -> list[Message]:
        """A correct reference trajectory (initial messages, assistant turns, tool observations)."""
        raise TypeError(f"environment {self.name!r} does not define demonstration()")

    def direct_demonstration(self, task: Mapping[str, Any]) -> list[Message]:
        """The task answered at once, with no tool call: what a demonstrator who knows the answer writes.

        Mixed into SFT data (`direct_demo_fraction`) it gives the policy a habit that it cannot execute
        itself, the kind of imperfect demonstration RL must learn to drop."""
        if "answer" not in task:
            raise ValueError(f"{self.name}: direct_demonstration needs the task's 'answer' key: {dict(task)!r}")
        return self.initial_messages(task) + [Message("assistant", f"<answer>{task['answer']}</answer>")]

    # ---- shared logic ------------------------------------------------------------------------------
    def tool_schemas(self) -> list[dict]:
        """JSON schemas of the tools, as shown to the model in the system prompt."""
        return [t.schema() for t in self.tools.values()]

    def full_system_prompt(self) -> str:
        """The system prompt plus the tool list and the call format, when there are tools."""
        text = self.system_prompt
        if self.tools and self.tool_listing == "brief":
            listing = "; ".join(f"{t.name}({', '.join(t.params.get('properties', {}))})" for t in self.tools.values())
            text += '\nTools: ' + listing + '. Call: <tool_call>{"name": NAME, "arguments": {...}}</tool_call>'
        elif self.tools:
            listing = "\n".join(json.dumps(s, sort_keys=True) for s in self.tool_schemas())
            text += (
                "\n\nYou may call tools. Available tools:\n" + listing + "\nCall a tool with "
                '<tool_call>{"name": NAME, "arguments": {...}}</tool_call>; results come back in '
                "<tool_response> blocks."
            )
        return text.strip()

    def initial_messages(self, task: Mapping[str, Any]) -> list[Message]:
        """The first chat messages of an episode: an optional system prompt and the task prompt."""
        out = []
        sys_text = self.full_system_prompt()
        if sys_text:
            out.append(Message("system", sys_text))
        out.append(Message("user", self.prompt(task)))
        return out

    def step_budget_s(self, messages: Sequence[Message | Mapping[str, Any]]) -> float:
        """Upper bound of the seconds a step may take: the sum of the timeouts of the tools it will call."""
        msgs = as_messages(messages)
        if not msgs or msgs[-1].role != "assistant":
            return 0.0
        parsed = parse_tool_calls(msgs[-1].content)
        total = 0.0
        for call in parsed.calls[: self.max_tool_calls_per_turn]:
            tool = self.tools.get(call.name)
            total += tool.timeout_s if tool is not None else 0.0
        return total

    def final_answer(self, text: str) -> str | None:
        """The final answer a turn asserts (None: none): the last <answer> block, or where `accept_boxed`
        the last \\boxed{}. Math environments override this with the full math answer rules."""
        return extract_final_answer(text, accept_boxed=self.accept_boxed)

    def format_errors(self, msgs: Sequence[Message]) -> list[str]:
        """Every malformed tool call of the conversation: bad JSON/tags, unknown tools, bad arguments."""
        errors: list[str] = []
        if not self.tools:
            return errors
        for m in msgs:
            if m.role != "assistant":
                continue
            parsed = parse_tool_calls(m.content)
            errors.extend(parsed.errors)
            for call in parsed.calls:
                tool = self.tools.get(call.name)
                problem = validate_arguments(tool, call.arguments) if tool else f"unknown tool {call.name!r}"
                if problem:
                    errors.append(problem)
        return errors

    def step(self, task: Mapping[str, Any], messages: Sequence[Message | Mapping[str, Any]]) -> EnvStep:
        """Advance the episode given the whole conversation ending with the assistant's latest turn."""
        msgs = as_messages(messages)
        if not msgs or msgs[-1].role != "assistant":
            raise ValueError(f"{self.name}.step: messages must end with an assistant turn")
        n_turns = sum(1 for m in msgs if m.role == "assistant")
        last = msgs[-1].content
        answer = self.final_answer(last)
        parsed: ToolCallParse = parse_tool_calls(last) if self.tools else ToolCallParse((), ())
        if answer is not None or not (parsed.calls or parsed.errors) or self.max_turns == 1:
            return self._finish(task, msgs, answer, n_turns)
        if n_turns >= self.max_turns:
            return failed_step("max_turns", f"{n_turns} assistant turns, limit {self.max_turns}")
        return self._run_tools(parsed)

    def _run_tools(self, parsed: ToolCallParse) -> EnvStep:
        results: list[tuple[str | None, str]] = [(None, f"error: {e}") for e in parsed.errors]
        calls = parsed.calls
        if len(calls) > self.max_tool_calls_per_turn:
            results.append((None, f"error: at most {self.max_tool_calls_per_turn} tool calls per turn; "
                                  f"{len(calls) - self.max_tool_calls_per_turn} ignored"))
            calls = calls[: self.max_tool_calls_per_turn]
        for call in calls:
            tool = self.tools.get(call.name)
            if tool is None:
                results.append((call.name, f"error: unknown tool {call.name!r}; available: {sorted(self.tools)}"))
                continue
            try:
                results.append((call.name, run_tool(tool, call.arguments)))
            except ToolTimeout as e:
                return failed_step("timeout", str(e), tool_calls=len(calls))
            except ToolError as e:
                return failed_step("tool_error", str(e), tool_calls=len(calls))
        return EnvStep(Message("tool", format_tool_results(results)), False, None, len(calls), None)

    def _finish(self, task: Mapping[str, Any], msgs: Sequence[Message], answer: str | None,
                n_turns: int) -> EnvStep:
        errors = self.format_errors(msgs)
        if answer is None:
            reward = Reward(0.0, False, False, ("no_answer",), {"turns": n_turns})
            return EnvStep(None, True, reward, 0, None)
        try:
            correct, details = call_with_timeout(
                lambda: self.verify(task, answer), self.verify_timeout_s, f"{self.name} verifier"
            )
        except ToolTimeout as e:
            return failed_step("timeout", str(e))
        except Exception as e:  # a verifier bug costs this trajectory only
            return failed_step("verifier_error", f"{type(e).__name__}: {e}")
        details = dict(details, answer=answer, turns=n_turns)
        tags = ("malformed_tool_call",) if errors else ()
        # a verifier with partial credit reports details["score"] in [0, 1]; else the reward is the verdict
        value = float(details["score"]) if "score" in details else (1.0 if correct else 0.0)
        reward = Reward(value, bool(correct), not errors, tags, details)
        return EnvStep(None, True, reward, 0, None)


def task_to_json(task: Mapping[str, Any]) -> str:
    """Serialise a task record, failing with a clear message when it is not JSON-serialisable."""
    try:
        return json.dumps(task, sort_keys=True)
    except TypeError as e:
        raise ValueError(f"task record is not JSON-serialisable: {e}") from e
