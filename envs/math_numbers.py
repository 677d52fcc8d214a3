"""Exact reading of plain numbers, so that no number is ever compared by rounding.

Read exactly: integers of any size, finite decimals, repeating decimals (0.1\\overline{6} = 1/6),
e-notation and `a \\times 10^{k}`, integer fractions (`a/b`, `\\frac{a}{b}`, `\\frac ab`), mixed numbers
(`2\\frac12`, `2 1/2`), percentages (`p%` = p/100), thousands separators (`1,000`, `1{,}000`) when allowed.
A finite decimal is a rational with a power-of-ten denominator, so it never equals 1/3 or sqrt(2)/2.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

MAX_EXPONENT = 400  # 1e400 is read; 1e99999999 is rejected instead of computed
MAX_DIGITS = 2000

_INT = r"\d+"
_THOUSANDS = r"\d{1,3}(?:(?:,|\{,\})\d{3})+"
_DECIMAL = r"(?:\d+\.\d*|\.\d+|\d+)"
_REPEAT_RE = re.compile(r"^(\d*)\.(\d*)\\(?:overline|bar)\s*\{?\s*(\d+)\s*\}?$")
_SCI_RE = re.compile(r"^(" + _DECIMAL + r")(?:[eE]([+-]?\d+)|\s*\\(?:times|cdot)\s*10\s*\^\s*\{?\s*([+-]?\d+)\s*\}?)$")
_FRAC_RE = re.compile(r"^\\frac\s*(?:\{\s*([+-]?\d+)\s*\}|(\d))\s*(?:\{\s*([+-]?\d+)\s*\}|(\d))$")
_SLASH_RE = re.compile(r"^([+-]?\d+)\s*/\s*([+-]?\d+)$")
_MIXED_RE = re.compile(r"^(\d+)\s*(\\frac\s*(?:\{\s*\d+\s*\}|\d)\s*(?:\{\s*\d+\s*\}|\d)|\s\d+\s*/\s*\d+)$")
_PERCENT_RE = re.compile(r"^(.*?)\s*(?:\\%|%|\\text\{\s*%\s*\}|\s*percent)$")


@dataclass(frozen=True)
class Number:
    """An exactly read number and how it was written (simplest-form mode cares about the spelling)."""

    value: Fraction
    kind: str  # "integer", "decimal", "fraction", "mixed", "scientific", "repeating"
    percent: bool = False


def _strip_sign(s: str) -> tuple[int, str]:
    sign = 1
    while s[:1] in ("+", "-"):
        if s[0] == "-":
            sign = -sign
        s = s[1:].lstrip()
    return sign, s


def _repeating(m: re.Match) -> Fraction:
    whole, fixed, rep = m.group(1) or "0", m.group(2), m.group(3)
    base = Fraction(int(whole + fixed), 10 ** len(fixed))
    return base + Fraction(int(rep), (10 ** len(rep) - 1) * 10 ** len(fixed))


def _frac_parts(m: re.Match) -> tuple[int, int]:
    p = m.group(1) if m.group(1) is not None else m.group(2)
    q = m.group(3) if m.group(3) is not None else m.group(4)
    return int(p), int(q)


def _unsigned(s: str, thousands: bool) -> Number | None:
    """The value of `s` with no leading sign, or None when it is not one plain number."""
    if thousands and re.fullmatch(_THOUSANDS + r"(?:\.\d+)?", s):
        s = s.replace("{,}", "").replace(",", "")
    if re.fullmatch(_INT, s):
        return Number(Fraction(int(s)), "integer")
    if re.fullmatch(_DECIMAL, s):
        return Number(Fraction(s), "decimal")
    m = _REPEAT_RE.match(s)
    if m and (m.group(1) or m.group(2) is not None):
        return Number(_repeating(m), "repeating")
    m = _SCI_RE.match(s)
    if m:
        exp = int(m.group(2) if m.group(2) is not None else m.group(3))
        if abs(exp) > MAX_EXPONENT:
            return None
        return Number(Fraction(m.group(1)) * Fraction(10) ** exp, "scientific")
    m = _FRAC_RE.match(s) or _SLASH_RE.match(s)
    if m:
        p, q = _frac_parts(m) if m.re is _FRAC_RE else (int(m.group(1)), int(m.group(2)))
        return Number(Fraction(p, q), "fraction") if q != 0 else None
    m = _MIXED_RE.match(s)
    if m:
        part = _unsigned(m.group(2).strip(), False)
        if part is None or part.kind != "fraction" or not 0 < part.value < 1:
            return None
        return Number(int(m.group(1)) + part.value, "mixed")
    return None


def parse_number(text: str, thousands: bool = True) -> Number | None:
    """Exact value of `text` when it is one plain number (see module docstring), else None.

    `thousands`: read `1,000` as 1000 (only sensible when the other side is one number, not a list)."""
    s = text.strip()
    if not s or len(s) > MAX_DIGITS:
        return None
    percent = False
    m = _PERCENT_RE.match(s)
    if m:
        s, percent = m.group(1).strip(), True
    sign, s = _strip_sign(s)
    if s.startswith("(") and s.endswith(")") and "(" not in s[1:-1]:
        sign2, s = _strip_sign(s[1:-1].strip())
        sign *= sign2
    number = _unsigned(s, thousands)
    if number is None:
        return None
    value = sign * number.value
    if percent:
        value /= 100
    return Number(value, number.kind, percent)


def exact_number(text: str, thousands: bool = True) -> Fraction | None:
    """Just the value of parse_number (None when `text` is not one plain number)."""
    n = parse_number(text, thousands)
    return None if n is None else n.value


_DECIMAL_IN_TEXT_RE = re.compile(r"(?<![\d.}])(\d*)\.(\d+)(?:\\(?:overline|bar)\s*\{?\s*(\d+)\s*\}?)?(?![\d.])"
                                 r"|(?<![\d.}])(\d*)\.\\(?:overline|bar)\s*\{?\s*(\d+)\s*\}?")


def _decimal_as_frac(m: re.Match) -> str:
    if m.group(4) is not None or m.group(5) is not None:
        value = _repeating(_REPEAT_RE.match(f"{m.group(4) or '0'}.\\overline{{{m.group(5)}}}"))
    elif m.group(3) is not None:
        value = _repeating(_REPEAT_RE.match(f"{m.group(1) or '0'}.{m.group(2)}\\overline{{{m.group(3)}}}"))
    else:
        value = Fraction(f"{m.group(1) or '0'}.{m.group(2)}")
    return f"{{\\frac{{{value.numerator}}}{{{value.denominator}}}}}"


def decimals_to_fractions(latex: str) -> str:
    """Rewrite every decimal literal (finite or repeating) as an exact \\frac, so a symbolic engine that
    would turn 0.333 into a float (and then round) sees the rational 333/1000 instead."""
    return _DECIMAL_IN_TEXT_RE.sub(_decimal_as_frac, latex)
