"""Math answer verification: light normalisation, then math-verify (parse + verify) for equivalence.

Modes:
  "equivalent": the answer equals the reference mathematically (1/2 == 2/4 == 0.5 == \\frac{1}{2}).
  "simplest":   equivalent, and no integer fraction in the answer is unreduced (2/4, 6/3, \\frac{3}{1}).
Numbers are compared exactly where both sides are plain numbers, so 0.333 != 1/3 and 0.5000001 != 0.5
(math-verify alone rounds floats to a few digits, which accepts such near misses).
"""
from __future__ import annotations

import math
import re
import signal
import threading
from fractions import Fraction

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

MODES = ("equivalent", "simplest")

_UNICODE = {"−": "-", "–": "-", "×": r"\times ", "÷": "/", "°": r"^\circ", "π": r"\pi", "∞": r"\infty"}
_THOUSANDS_RE = re.compile(r"(?<![\d.,])(\d{1,3}(?:,\d{3})+)(?![\d,])")
_NUMBER_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_FRACTION_RE = re.compile(r"^([+-]?\d+)\s*/\s*([+-]?\d+)$")
_FRAC_LITERAL_RE = re.compile(
    r"\\[dt]?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(-?\d+)\s*\}"  # \frac{2}{4}
    r"|\\[dt]?frac(\d)(\d)"  # \frac24
    r"|(?<![\d.])(\d+)\s*/\s*(\d+)(?![\d.])"  # 2/4
)
_MIXED_RE = re.compile(r"^([+-]?)(\d+)\s*\\[dt]?frac\s*\{(\d+)\}\s*\{(\d+)\}$")


def normalise(text: str) -> str:
    """Surface clean-up that math-verify does not do: unicode symbols, thousands commas, trailing dots."""
    s = text.strip()
    for a, b in _UNICODE.items():
        s = s.replace(a, b)
    s = s.replace("{,}", ",").replace("\\$", "")
    s = s.strip().strip("$").strip()
    if s.endswith(".") and not s.endswith(".."):
        s = s[:-1].rstrip()
    # "1,234,567" is one number unless the string is a list (then every comma group would be 3 digits)
    s = _THOUSANDS_RE.sub(lambda m: m.group(1).replace(",", ""), s)
    s = re.sub(r"^([+-])\s+(?=\d)", r"\1", s)
    return s


def exact_number(text: str) -> Fraction | None:
    """The exact value of a plain numeric string (int, decimal, scientific, a/b), else None."""
    s = text.replace(" ", "")
    if s.startswith("--"):
        s = s[2:]
    if _NUMBER_RE.match(s):
        return Fraction(s)
    m = _FRACTION_RE.match(s)
    if m and int(m.group(2)) != 0:
        return Fraction(int(m.group(1)), int(m.group(2)))
    mm = _MIXED_RE.match(text.replace(" ", ""))
    if mm and int(mm.group(4)) != 0:
        value = int(mm.group(2)) + Fraction(int(mm.group(3)), int(mm.group(4)))
        return -value if mm.group(1) == "-" else value
    return None


TIMEOUT_S = 5


def _timeout() -> int | None:
    """math-verify's own SIGALRM timeout, used only on the main thread and when no outer timer is armed
    (its alarm would replace the caller's, e.g. the environment's verify timeout); else the caller bounds time."""
    if threading.current_thread() is not threading.main_thread() or signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        return None
    return TIMEOUT_S


def _parse(text: str) -> list:
    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    body = text if ("\\boxed" in text or "$" in text) else f"${text}$"
    return parse(body, extraction_config=configs, parsing_timeout=_timeout())


def unreduced_fractions(text: str) -> list[str]:
    """Integer fractions written in `text` that are not in lowest terms (or have denominator 1)."""
    bad = []
    for m in _FRAC_LITERAL_RE.finditer(text):
        groups = [g for g in m.groups() if g is not None]
        p, q = int(groups[0]), int(groups[1])
        if q == 0 or abs(q) == 1 or math.gcd(p, q) != 1:
            bad.append(m.group(0))
    return bad


def verify_math(answer: str, reference: str, mode: str = "equivalent") -> bool:
    """True when `answer` matches `reference` under `mode` (see module docstring)."""
    if mode not in MODES:
        raise ValueError(f"math verifier mode: {mode!r} is not one of {MODES}")
    if not isinstance(answer, str) or not isinstance(reference, str):
        raise ValueError("verify_math: answer and reference must be strings")
    a, r = normalise(answer), normalise(reference)
    if not a:
        return False
    if mode == "simplest" and unreduced_fractions(a):
        return False
    xa, xr = exact_number(a), exact_number(r)
    if xa is not None and xr is not None:
        return xa == xr
    gold, pred = _parse(r), _parse(a)
    if not gold or not pred:
        return False
    return bool(verify(gold, pred, timeout_seconds=_timeout()))
