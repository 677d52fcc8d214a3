"""Math answer verification: is a model response's final answer the reference answer, exactly?

Modes:
  "equivalent": the final answer (envs/answer_extraction.py) equals the reference mathematically:
                1/2 == 2/4 == 0.5 == \\frac{1}{2}; 0.333 != 1/3; x = 3 == 3; {1,2} == {2,1}; (1,2) != (2,1).
  "simplest":   equivalent, and every element of the answer is in simplest form (envs/math_simplest.py).
Numbers are read exactly (envs/math_numbers.py), everything else is compared exactly by sympy
(envs/math_compare.py); nothing is rounded. Units are split off first: a unit different from the
reference's is wrong, a unit the reference lacks is ignored. docs/verifier.md states every rule.

The verifier never raises on a response and never spends more than TIMEOUT_S of CPU time: the work runs in
a helper thread that is interrupted (an asynchronous exception) when it overruns, in any thread of any
process; an overrun or an error is a reject. The budget is the helper thread's own CPU time, so a loaded
machine (other processes taking the cores) does not turn a slow-but-valid check into a false reject; a
wall-clock backstop of WALL_FACTOR x the budget still stops a check that blocks instead of computing.
"""
from __future__ import annotations

import ctypes
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable

import sympy

from vagent_jax.envs.answer_extraction import FinalAnswer, extract_answer
from vagent_jax.envs.math_compare import elements_equal, is_inequality, objects_equal, as_real_set, to_sympy
from vagent_jax.envs.math_numbers import Number, parse_number
from vagent_jax.envs.math_simplest import simplest_form_problems
from vagent_jax.envs.math_text import normalise, same_unit, split_unit

MODES = ("equivalent", "simplest")
TIMEOUT_S = 5.0  # CPU seconds of the helper thread
WALL_FACTOR = 20.0  # wall-clock backstop, in units of the CPU budget
_POLL_S = 0.02


class VerifierTimeout(Exception):
    """Raised inside the helper thread of a verification that ran past its time."""


def _cpu_clock(thread: threading.Thread) -> Callable[[], float] | None:
    """A reader of `thread`'s CPU time in seconds, or None where the platform has no per-thread CPU clock."""
    try:
        clock = time.pthread_getcpuclockid(thread.ident)  # type: ignore[arg-type]
        time.clock_gettime(clock)
    except (AttributeError, OSError, OverflowError):
        return None
    return lambda: time.clock_gettime(clock)


def run_bounded(fn: Callable[[], bool], timeout_s: float, wall_factor: float = WALL_FACTOR) -> bool:
    """fn() in a helper thread, False when it raises or overruns (it is then interrupted): more than
    `timeout_s` of the thread's CPU time, or more than `wall_factor * timeout_s` of wall time.

    Works off the main thread too (no SIGALRM needed); a caller's own alarm still interrupts the wait.
    Without a per-thread CPU clock the bound is `timeout_s` of wall time."""
    result: list[bool] = []

    def target() -> None:
        try:
            result.append(bool(fn()))
        except BaseException:  # a verifier fault or our interrupt: reject
            result.append(False)

    worker = threading.Thread(target=target, name="math-verifier", daemon=True)
    worker.start()
    cpu = _cpu_clock(worker)
    wall_limit = time.monotonic() + (timeout_s * wall_factor if cpu is not None else timeout_s)
    try:
        while worker.is_alive():
            worker.join(_POLL_S)
            if not worker.is_alive():
                break
            try:
                over_cpu = cpu is not None and cpu() > timeout_s
            except OSError:  # the thread ended between the two checks: its clock is gone
                over_cpu = False
            if over_cpu or time.monotonic() > wall_limit:
                break
    finally:
        if worker.is_alive():
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(worker.ident),
                                                       ctypes.py_object(VerifierTimeout))
    return bool(result and result[0]) and not worker.is_alive()


@dataclass(frozen=True)
class _Value:
    core: str  # the expression, unit removed
    unit: str | None

    @staticmethod
    def of(text: str) -> "_Value":
        core, unit = split_unit(normalise(text))
        return _Value(core, unit)


def _numbers_equal(a: Number, r: Number) -> bool:
    """Exact; a percentage also matches its bare number when the other side is not a percentage."""
    if a.value == r.value:
        return True
    if a.percent != r.percent:
        pct, bare = (a, r) if a.percent else (r, a)
        return pct.value * 100 == bare.value
    return False


def _plain_text(s: str) -> str:
    """The text with \\text{}-like wrappers and spacing removed (case kept: x and X differ)."""
    return re.sub(r"\s+", " ", re.sub(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}", r"\1", s)).strip()


def _single_equal(a: _Value, r: _Value) -> bool:
    if _plain_text(a.core) and _plain_text(a.core) == _plain_text(r.core):  # same text: same answer
        return True
    rn = parse_number(r.core)
    gr = None if rn is not None else to_sympy(r.core)
    one_number = rn is not None or (isinstance(gr, sympy.Expr) and bool(gr.is_number))
    an = parse_number(a.core, thousands=one_number)
    if an is not None and rn is not None:
        return _numbers_equal(an, rn)
    ga = sympy.Rational(an.value.numerator, an.value.denominator) if an is not None else to_sympy(a.core)
    if gr is None and rn is not None:
        gr = sympy.Rational(rn.value.numerator, rn.value.denominator)
    if ga is None or gr is None:
        return False
    return objects_equal(gr, ga)


def _set_elements(values: list[_Value]) -> list | None:
    """The elements a list of values asserts: `x = 3 or x = -3` -> [3, -3]; `x<1 or x>2` -> one union."""
    objs = []
    for v in values:
        n = parse_number(v.core, thousands=False)
        obj = sympy.Rational(n.value.numerator, n.value.denominator) if n is not None else to_sympy(v.core)
        if obj is None:
            return None
        objs.append(obj)
    if all(is_inequality(o) for o in objs):
        sets = [as_real_set(o) for o in objs]
        return None if any(s is None for s in sets) else [sympy.Union(*sets)]
    out: list = []
    for o in objs:
        if isinstance(o, sympy.Eq) and isinstance(o.lhs, sympy.Symbol):
            o = o.rhs
        for x in (list(o) if isinstance(o, sympy.FiniteSet) else [o]):
            if not any(objects_equal(x, y) for y in out):
                out.append(x)
    return out


def _set_equal(answer: list[_Value], reference: list[_Value]) -> bool:
    a, r = _set_elements(answer), _set_elements(reference)
    if a is None or r is None:
        return False
    if len(a) == 1 and len(r) == 1:
        return objects_equal(r[0], a[0])
    return elements_equal(a, r)


def _matches(final: FinalAnswer, ref: FinalAnswer, mode: str, reference: str) -> bool:
    answer = [_Value.of(v) for v in final.values]
    refs = [_Value.of(v) for v in ref.values]
    ref_unit = refs[0].unit if len(refs) == 1 else None
    if any(not v.core for v in answer) or not all(same_unit(v.unit, ref_unit) for v in answer):
        return False
    if len(answer) == 1 and len(refs) == 1:
        ok = _single_equal(answer[0], refs[0])
    else:
        ok = _set_equal(answer, refs)
    if not ok or mode == "equivalent":
        return ok
    ref_decimal = bool(re.search(r"\d*\.\d|\\overline", reference))
    ref_percent = "%" in reference or "percent" in reference
    return not any(simplest_form_problems(v.core, ref_decimal, ref_percent) for v in answer)


def _verify(answer: str, reference: str, mode: str) -> bool:
    final = extract_answer(answer)
    if final is None:
        return False
    ref = extract_answer(reference) or FinalAnswer((normalise(reference),), "reference")
    return _matches(final, ref, mode, reference)


def verify_math(answer: str, reference: str, mode: str = "equivalent", timeout_s: float = TIMEOUT_S) -> bool:
    """True when the final answer of the response `answer` matches `reference` under `mode`.

    A bad `mode` or non-string arguments are the caller's bug and raise; anything about the response
    itself (unparsable, hostile, too slow to check) is a reject."""
    if mode not in MODES:
        raise ValueError(f"math verifier mode: {mode!r} is not one of {MODES}")
    if not isinstance(answer, str) or not isinstance(reference, str):
        raise ValueError("verify_math: answer and reference must be strings")
    return run_bounded(lambda: _verify(answer, reference, mode), timeout_s)
