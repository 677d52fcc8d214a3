"""Python tool environment: the model runs code in the sandbox, reads its output, then answers.

Tasks are integer-valued computations that are tedious by hand (prime sums, divisor counts, Fibonacci
residues, digit sums of powers). Errors and limits inside the user's code are observations, not faults.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable, Mapping

from vagent_jax.envs.arithmetic import check_gen_args, parse_plain_number, task_seed
from vagent_jax.envs.base import Environment, Message
from vagent_jax.envs.registry import register_env
from vagent_jax.config import ConfigError
from vagent_jax.envs.sandbox import SandboxLimits, SandboxUnavailable, describe, resolve_backend, run_python
from vagent_jax.envs.tools import Tool

log = logging.getLogger(__name__)


def python_tool(limits: SandboxLimits = SandboxLimits()) -> Tool:
    """The `python` tool: {"code": str} -> the sandboxed run's stdout/stderr and how it ended."""
    return Tool(
        name="python",
        description=("Run a Python 3 script in a sandbox (no network; a private working dir and /tmp); "
                     "print what you need."),
        params={"properties": {"code": {"type": "string"}}, "required": ["code"]},
        timeout_s=limits.wall_s + 2.0,
        fn=lambda code: describe(run_python(code, limits)),
    )


def _sum_primes_below(n: int) -> int:
    sieve = bytearray([1]) * max(n, 2)
    sieve[0] = sieve[1] = 0
    for i in range(2, int(n**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(range(i * i, n, i)))
    return sum(i for i in range(n) if sieve[i])


def _num_divisors(n: int) -> int:
    return sum(1 if i * i == n else 2 for i in range(1, int(n**0.5) + 1) if n % i == 0)


def _fib_mod(n: int, m: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, (a + b) % m
    return a


# family -> (question template, reference function, demonstration code template)
_FAMILIES: dict[str, tuple[str, Callable[..., int], str]] = {
    "sum_primes": ("What is the sum of all primes below {n}?", lambda n: _sum_primes_below(n),
                   "n = {n}\ns = bytearray([1]) * n\ns[0] = s[1] = 0\nfor i in range(2, int(n ** 0.5) + 1):\n"
                   "    if s[i]:\n        s[i*i::i] = bytearray(len(range(i*i, n, i)))\n"
                   "print(sum(i for i in range(n) if s[i]))"),
    "divisors": ("How many positive divisors does {n} have?", lambda n: _num_divisors(n),
                 "n = {n}\nprint(sum(1 if d * d == n else 2 for d in range(1, int(n ** 0.5) + 1) if n % d == 0))"),
    "fib_mod": ("What is F({n}) mod {m}, where F(0)=0, F(1)=1 are the Fibonacci numbers?",
                lambda n, m: _fib_mod(n, m),
                "a, b = 0, 1\nfor _ in range({n}):\n    a, b = b, (a + b) % {m}\nprint(a)"),
    "digit_sum_pow": ("What is the sum of the decimal digits of {a}**{b}?",
                      lambda a, b: sum(map(int, str(a**b))), "print(sum(map(int, str({a} ** {b}))))"),
}


@register_env("python")
class PythonEnv(Environment):
    """Multi-turn: compute an integer with the sandboxed `python` tool, then answer."""

    name = "python"
    max_turns = 4
    system_prompt = "Solve the problem. You can run Python with the python tool, then give <answer>NUMBER</answer>."

    def __init__(self, max_turns: int | None = None, cpu_s: int = 2, wall_s: float = 3.0,
                 memory_mb: int = 512, max_output_bytes: int = 8192, allow_unisolated: bool = False,
                 sandbox_backend: str = "auto") -> None:
        if not isinstance(allow_unisolated, bool):
            raise ConfigError.at("allow_unisolated", f"must be true or false, got {allow_unisolated!r}")
        try:
            self.limits = SandboxLimits(cpu_s=cpu_s, wall_s=wall_s, memory_bytes=memory_mb * 2**20,
                                        max_output_bytes=max_output_bytes, backend=sandbox_backend,
                                        allow_unisolated=allow_unisolated)
        except ValueError as e:
            raise ConfigError(f"python environment: {e}") from None
        self.sandbox_backend = self._check_isolation(self.limits)
        super().__init__(max_turns)

    @staticmethod
    def _check_isolation(limits: SandboxLimits) -> str:
        """Refuse to run untrusted code without kernel isolation unless `allow_unisolated` says so."""
        try:
            backend = resolve_backend(limits)
        except SandboxUnavailable as e:
            raise ConfigError.at("allow_unisolated", f"{e}; the python tool refuses to run model-written code "
                                 "without it. Install bubblewrap or enable unprivileged user namespaces, or "
                                 "set allow_unisolated: true to run it with rlimits and an audit hook only "
                                 "(the code can then read host files and reach the host's network)") from None
        if backend == "unisolated":
            log.warning("python environment: the sandbox runs WITHOUT kernel isolation (allow_unisolated: true): "
                        "model-written code can read host files and reach the host's network")
        return backend

    def make_tools(self) -> list[Tool]:
        return [python_tool(self.limits)]

    def prompt(self, task: Mapping[str, Any]) -> str:
        return _FAMILIES[task["family"]][0].format(**task["params"])

    def verify(self, task: Mapping[str, Any], answer: str) -> tuple[bool, dict]:
        value = parse_plain_number(answer)
        if value is None:
            return False, {"reason": "answer is not a plain number"}
        return value == int(task["answer"]), {}

    def generate_tasks(self, n: int, seed: int, difficulty: int = 1) -> list[dict]:
        """difficulty d scales the inputs (about 10**(d+2)); families rotate at random."""
        check_gen_args(self.name, n, difficulty, 4)
        rng = task_seed(self.name, seed, difficulty)
        scale = 10 ** (difficulty + 2)
        tasks = []
        for _ in range(n):
            family = rng.choice(sorted(_FAMILIES))
            params = {
                "sum_primes": lambda: {"n": rng.randint(scale // 10, scale)},
                "divisors": lambda: {"n": rng.randint(scale // 10, scale * 10)},
                "fib_mod": lambda: {"n": rng.randint(scale // 10, scale), "m": rng.randint(10, 10**4)},
                "digit_sum_pow": lambda: {"a": rng.randint(2, 99), "b": rng.randint(10, 10 * (difficulty + 2))},
            }[family]()
            answer = _FAMILIES[family][1](**params)
            tasks.append({"family": family, "params": params, "answer": str(answer)})
        return tasks

    def demonstration(self, task: Mapping[str, Any]) -> list[Message]:
        """Runs the reference code in the sandbox, so the observation is exactly what the tool returns."""
        code = _FAMILIES[task["family"]][2].format(**task["params"])
        call = json.dumps({"name": "python", "arguments": {"code": code}})
        msgs = self.initial_messages(task) + [Message("assistant", f"<tool_call>{call}</tool_call>")]
        obs = self.step(task, msgs).observation
        if obs is None:
            raise RuntimeError(f"python demonstration got no observation for task {task!r}")
        return msgs + [obs, Message("assistant", f"<answer>{task['answer']}</answer>")]
