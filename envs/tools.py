"""Tools: a name, a JSON argument schema, a timeout and a function; validation and timed execution.

A tool call whose arguments break the schema is the model's mistake: it gets an error observation.
A tool whose function raises or overruns `timeout_s` is an infrastructure fault: `run_tool` raises
ToolError / ToolTimeout and the environment ends the episode with reward 0 and an error tag.
"""
from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


class ToolError(RuntimeError):
    """The tool's own code raised: a fault of the tool, not of the model."""


class ToolTimeout(ToolError):
    """The tool ran past its timeout_s."""


@dataclass(frozen=True)
class Tool:
    """A callable tool. `params` is a JSON-schema object: {"properties": {...}, "required": [...]}.

    `fn(**arguments) -> str` computes the observation text; `timeout_s` bounds its wall time;
    `max_output_chars` truncates what it returns.
    """

    name: str
    description: str
    params: Mapping[str, Any]
    timeout_s: float
    fn: Callable[..., Any]
    max_output_chars: int = 4000

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"Tool.name: {self.name!r} must be a non-empty identifier")
        if not self.timeout_s > 0:
            raise ValueError(f"tool '{self.name}': timeout_s must be > 0, got {self.timeout_s!r}")
        props = self.params.get("properties")
        if not isinstance(props, Mapping):
            raise ValueError(f"tool '{self.name}': params needs a 'properties' mapping")
        for key, spec in props.items():
            if spec.get("type") not in _JSON_TYPES:
                raise ValueError(f"tool '{self.name}': param '{key}' has unsupported type {spec.get('type')!r}")
        for key in self.params.get("required", ()):
            if key not in props:
                raise ValueError(f"tool '{self.name}': required param '{key}' is not in properties")

    def schema(self) -> dict:
        """The function schema shown to the model."""
        return {
            "name": self.name,
            "description": self.description,
            "parameters": {"type": "object", **dict(self.params)},
        }


def validate_arguments(tool: Tool, arguments: Mapping[str, Any]) -> str | None:
    """None when `arguments` fit the tool's schema, else a description of the first problem."""
    props = tool.params["properties"]
    for key in tool.params.get("required", ()):
        if key not in arguments:
            return f"tool '{tool.name}': missing required argument '{key}'"
    for key, value in arguments.items():
        if key not in props:
            return f"tool '{tool.name}': unknown argument '{key}' (expected {sorted(props)})"
        kind = props[key]["type"]
        ok = isinstance(value, _JSON_TYPES[kind]) and not (kind in ("integer", "number") and isinstance(value, bool))
        if not ok:
            return f"tool '{tool.name}': argument '{key}' must be {kind}, got {type(value).__name__}"
    return None


class _Alarm(BaseException):
    """Raised by the SIGALRM handler; a BaseException so `except Exception` in tool code cannot swallow it."""


def _alarm_handler(signum: int, frame: Any) -> None:
    raise _Alarm()


def call_with_timeout(fn: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Run `fn()`; raise ToolTimeout when it takes more than `timeout_s` seconds.

    Uses SIGALRM in the main thread (interrupts Python code, sleeps and blocking I/O). Off the main
    thread no alarm is possible; the worker pool's per-request deadline still bounds the wall time.
    """
    if threading.current_thread() is not threading.main_thread():
        return fn()
    old = signal.signal(signal.SIGALRM, _alarm_handler)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return fn()
    except _Alarm:
        raise ToolTimeout(f"{what} ran past its timeout of {timeout_s:g}s") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_tool(tool: Tool, arguments: Mapping[str, Any]) -> str:
    """Validate arguments and run the tool under its timeout; returns the (truncated) observation text.

    Bad arguments give an "error: ..." observation; a raising tool raises ToolError; an overrun raises
    ToolTimeout.
    """
    problem = validate_arguments(tool, arguments)
    if problem is not None:
        return f"error: {problem}"
    try:
        out = call_with_timeout(lambda: tool.fn(**arguments), tool.timeout_s, f"tool '{tool.name}'")
    except ToolTimeout:
        raise
    except Exception as e:
        raise ToolError(f"tool '{tool.name}' raised {type(e).__name__}: {e}") from e
    text = out if isinstance(out, str) else str(out)
    if len(text) > tool.max_output_chars:
        text = text[: tool.max_output_chars] + f"\n...[truncated {len(text) - tool.max_output_chars} chars]"
    return text


def format_tool_results(results: Sequence[tuple[str | None, str]]) -> str:
    """The content of one tool message (the chat template wraps it in <tool_response> tags).

    One result is its text alone; several are `name: text` blocks in call order (no name: a parse error)."""
    if len(results) == 1:
        return results[0][1]
    return "\n".join(f"{name}: {text}" if name else text for name, text in results)
