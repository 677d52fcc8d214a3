"""Simplest-form checks, applied to every element of an answer (set, tuple, interval, equation sides).

A rational value has exactly one simplest spelling family: an integer, or p/q (`\\frac{p}{q}`) in lowest
terms with q > 1 and the sign in front or in the numerator; a decimal only when the reference is written
as a decimal, a percentage only when the reference is one. Any other spelling of a rational
(`2^{10}`, `5!`, `\\log_2 8`, `\\frac12+\\frac14`, `-(-3)`, `\\sqrt{4}`, `6/3`) is unevaluated arithmetic.
An irrational or symbolic value must have simplified radicals (no square factor or fraction under the
root, no radical or i in a denominator), fractions with no common factor, and no arithmetic left that
simplification would shorten (`\\pi+\\pi`, `\\sqrt2\\sqrt3`, `(1+i)^2`).
"""
from __future__ import annotations

import math
import re

import sympy

from vagent_jax.envs.math_compare import to_sympy
from vagent_jax.envs.math_numbers import parse_number

_CANONICAL_NUMBER_RE = re.compile(
    r"-?\d+|-?\d+\s*/\s*\d+|-?\\frac\s*\{-?\d+\}\s*\{\d+\}|-?\\frac\d\d|-?\d*\.\d+|-?\d+\.\d*"
    r"|-?\d+\s*\\frac\s*\{\d+\}\s*\{\d+\}|-?\d+\s*\\frac\d\d|-?\d+ \d+/\d+|-?\d*\.\d*\\overline\{?\d+\}?")
_SQRT_RE = re.compile(r"\\sqrt\s*(?:\[\s*(\d+)\s*\])?\s*(?:\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}|(\d))")
_FRAC_RE = re.compile(r"\\frac\s*\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}\s*\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")
_SLASH_DENOMINATOR_RE = re.compile(r"/\s*(?:\(?\s*\\sqrt|\(?\s*\d*\s*i\b)")
_RELATIONS_RE = re.compile(r"\\(?:leq?|geq?|neq|lt|gt|ne)\b|<|>|=")


def _split_top(text: str, sep: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += {"{": 1, "(": 1, "[": 1, "}": -1, ")": -1, "]": -1}.get(ch, 0)
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur]


def elements(text: str) -> list[str]:
    """The scalar pieces of a value: set/tuple/interval elements and the sides of (in)equations."""
    s = text.strip()
    for left, right in ((r"\{", r"\}"), ("(", ")"), ("[", "]"), ("(", "]"), ("[", ")")):
        if s.startswith(left) and s.endswith(right) and "," in s:
            s = s[len(left):len(s) - len(right)]
            break
    out = []
    for part in _split_top(s, ","):
        out.extend(p.strip() for p in _RELATIONS_RE.split(part) if p.strip())
    return out


def _bad_number(piece: str, ref_decimal: bool, ref_percent: bool) -> str | None:
    """Why a plain number `piece` is not in simplest form, or None."""
    n = parse_number(piece, thousands=False)
    if n is None:
        return None
    body = re.sub(r"\s*(?:\\%|%)$", "", piece)
    if n.percent and not ref_percent:
        return "a percentage where the reference is not one"
    if not _CANONICAL_NUMBER_RE.fullmatch(body):
        return f"unevaluated arithmetic in {piece!r}"
    if n.kind in ("decimal", "repeating", "scientific") and not ref_decimal and not n.percent:
        return f"a decimal {piece!r} where the reference is not a decimal"
    if n.kind in ("fraction", "mixed"):
        m = re.search(r"\\frac\s*\{?(-?\d+)\}?\s*\{?(\d+)\}?$|(-?\d+)\s*/\s*(\d+)$", body)
        p, q = (int(g) for g in ((m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))))
        if q <= 1 or math.gcd(p, q) != 1:
            return f"fraction {piece!r} not in lowest terms with denominator > 1"
    return None


def _radical_problems(piece: str) -> list[str]:
    bad = []
    for m in _SQRT_RE.finditer(piece):
        index = int(m.group(1) or 2)
        inner = (m.group(2) if m.group(2) is not None else m.group(3)).strip()
        if "\\frac" in inner or "/" in inner:
            bad.append(f"a fraction under a root in {piece!r}")
        elif inner.isdigit() and index >= 2:
            k = int(inner)
            if k > 1 and any(k % (f ** index) == 0 for f in range(2, int(k ** (1 / index)) + 2)):
                bad.append(f"a {index}th-power factor under the root in {piece!r}")
    for m in _FRAC_RE.finditer(piece):
        if "\\sqrt" in m.group(2) or re.search(r"(?<![A-Za-z\\])i(?![A-Za-z])", m.group(2)):
            bad.append(f"a radical or i in a denominator in {piece!r}")
    if _SLASH_DENOMINATOR_RE.search(piece):
        bad.append(f"a radical or i in a denominator in {piece!r}")
    return bad


def _fraction_problems(piece: str) -> list[str]:
    """Symbolic fractions whose numerator and denominator share a factor (`\\frac{2\\pi}{4}`)."""
    bad = []
    for m in _FRAC_RE.finditer(piece):
        num, den = to_sympy(m.group(1)), to_sympy(m.group(2))
        if isinstance(num, sympy.Expr) and isinstance(den, sympy.Expr):
            g = sympy.gcd(num, den)
            if g not in (1, -1):
                bad.append(f"common factor {g} in {m.group(0)!r}")
    return bad


def _natural_logs(x: sympy.Basic) -> sympy.Basic:
    return x.replace(lambda e: isinstance(e, sympy.log) and len(e.args) == 2 and e.args[1] == sympy.E,
                     lambda e: sympy.log(e.args[0]))


def _terms(piece: str) -> list[str]:
    """Top-level summands of `piece` (signs kept with the term that follows them)."""
    terms, depth, cur = [], 0, ""
    for ch in piece:
        depth += {"{": 1, "(": 1, "[": 1, "}": -1, ")": -1, "]": -1}.get(ch, 0)
        if ch in "+-" and depth == 0 and cur.strip() and cur.rstrip()[-1] not in "^_*/(":
            terms.append(cur)
            cur = ""
        cur += ch
    return [t.strip() for t in terms + [cur] if t.strip()]


def _like_terms(piece: str) -> bool:
    """Two summands that are rational multiples of each other (`\\pi+\\pi`, `\\frac{\\pi}{6}+\\frac{\\pi}{3}`)."""
    terms = _terms(piece)
    if not 2 <= len(terms) <= 8:
        return False
    values = [to_sympy(t.lstrip("+")) for t in terms]
    if not all(isinstance(v, sympy.Expr) and v != 0 for v in values):
        return False
    return any(sympy.simplify(a / b).is_rational for i, a in enumerate(values) for b in values[i + 1:])


def _arithmetic_problems(piece: str) -> list[str]:
    value = to_sympy(piece)
    if not isinstance(value, sympy.Expr):
        return []
    if value.is_rational:
        return [f"unevaluated arithmetic in {piece!r}"]
    if value.free_symbols:
        return []
    if _like_terms(piece):
        return [f"like terms not combined in {piece!r}"]
    value = _natural_logs(value)
    if sympy.count_ops(sympy.simplify(value)) < sympy.count_ops(value):
        return [f"{piece!r} simplifies further"]
    return []


def simplest_form_problems(value: str, ref_decimal: bool, ref_percent: bool) -> list[str]:
    """Every reason why `value` (unit already removed) is not in simplest form; [] when it is."""
    problems: list[str] = []
    for piece in elements(value):
        if re.fullmatch(r"[A-Za-z]", piece) or piece in (r"\infty", r"-\infty", r"\emptyset"):
            continue
        if parse_number(piece, thousands=False) is not None:
            reason = _bad_number(piece, ref_decimal, ref_percent)
            problems += [reason] if reason else []
            continue
        problems += _radical_problems(piece) + _fraction_problems(piece) + _arithmetic_problems(piece)
    return problems
