"""Exact comparison of parsed math objects: scalars, sets, tuples, intervals, equations, inequalities.

Parsing is latex2sympy (what math-verify uses) on text whose decimals were first rewritten as exact
fractions, so no comparison here ever rounds: two scalars are equal only when their difference
simplifies to exactly 0. Sets compare unordered, tuples ordered, intervals by ends and openness;
inequalities compare as the sets of reals they define; equations are equal when they define the same
solution set; `x = 3` (an assignment) compares as its right-hand side against a bare value.
"""
from __future__ import annotations

import math
import re

import sympy
from latex2sympy2_extended import NormalizationConfig, latex2sympy
from latex2sympy2_extended.latex2sympy2 import ConversionConfig, normalize_latex
from sympy import Basic, Eq, FiniteSet, Interval, MatrixBase, Tuple
from sympy.core.relational import Relational
from sympy.logic.boolalg import And, Or

from vagent_jax.envs.math_numbers import MAX_EXPONENT, decimals_to_fractions

_NORMALISATION = NormalizationConfig(basic_latex=True, units=False, malformed_operators=True, nits=True,
                                     boxed="all", equations=False)
_CONVERSION = ConversionConfig(lowercase_symbols=False)  # x and X are different variables
_BIG_POWER_RE = re.compile(r"\^\s*\{?\s*\(?\s*(\d+)")
_TOWER_RE = re.compile(r"\^\s*\{[^{}A-Za-z]*\^")
MAX_EXPONENT_PRODUCT = 100_000
_HEAVY_RE = re.compile(r"\\(?:binom|dbinom|tbinom|Gamma|prod|sum|int|iint|lim|operatorname)")
_FACTORIAL_RE = re.compile(r"(\d+)\s*!")


def too_costly(latex: str) -> bool:
    """True for inputs whose exact value would take unbounded time or memory to compute (2^{10^9},
    10000000!, power towers): these are rejected instead of evaluated."""
    exponents = [int(m.group(1)) for m in _BIG_POWER_RE.finditer(latex)]
    if any(e > MAX_EXPONENT for e in exponents) or math.prod(e for e in exponents if e > 1) > MAX_EXPONENT_PRODUCT:
        return True
    if _TOWER_RE.search(latex):  # 2^{2^{100}}: a numeric power tower
        return True
    if any(int(m.group(1)) > 1000 for m in _FACTORIAL_RE.finditer(latex)):
        return True
    if re.search(r"[)}]\s*!", latex):  # (10^9)!: a factorial of a computed number
        return True
    if _HEAVY_RE.search(latex) and (re.search(r"\d{5}", latex) or "^" in latex):
        return True
    return len(re.findall(r"\^", latex)) > 12 or latex.count("{") > 60 or latex.count("!") > 4


def to_sympy(latex: str) -> Basic | MatrixBase | None:
    """One value's sympy object with exact rationals and `i` as the imaginary unit; None if unparsable."""
    if not latex or too_costly(latex):
        return None
    text = decimals_to_fractions(latex)
    try:
        expr = latex2sympy(normalize_latex(text, _NORMALISATION), is_real=False, convert_degrees=False,
                           normalization_config=None, conversion_config=_CONVERSION)
    except Exception:
        return None
    if not isinstance(expr, (Basic, MatrixBase)):
        return None
    symbols = {s: sympy.I for s in getattr(expr, "free_symbols", ()) if getattr(s, "name", "") == "i"}
    symbols |= {s: sympy.S.EmptySet for s in getattr(expr, "free_symbols", ()) if getattr(s, "name", "") in
                ("emptyset", "varnothing")}
    if symbols:
        expr = expr.xreplace(symbols)
    floats = {f: sympy.Rational(str(f)) for f in expr.atoms(sympy.Float)} if isinstance(expr, Basic) else {}
    return expr.xreplace(floats) if floats else expr


def _is_assignment(x: object) -> bool:
    return isinstance(x, Eq) and isinstance(x.lhs, sympy.Symbol) and x.lhs not in x.rhs.free_symbols


def is_inequality(x: object) -> bool:
    """An inequality or a Boolean combination of relations (`1 < x \\le 2`, `x \\neq 3`), not an equation."""
    if isinstance(x, Relational):
        return not isinstance(x, Eq)
    return isinstance(x, (And, Or)) and all(isinstance(a, Relational) or is_inequality(a) for a in x.args)


def as_real_set(x: Basic) -> Basic | None:
    """The set of reals an inequality in one variable defines (None when it has 0 or 2+ variables)."""
    syms = x.free_symbols
    if len(syms) != 1:
        return None
    s = next(iter(syms))
    real = sympy.Symbol(s.name, real=True)
    try:
        return x.xreplace({s: real}).as_set()
    except Exception:
        return None


def scalar_equal(a: Basic, b: Basic) -> bool:
    """Exact equality of two scalar expressions: their difference simplifies to 0 (no rounding)."""
    if a == b:
        return True
    try:
        d = sympy.simplify(sympy.expand(a - b))
    except Exception:
        return False
    return d == 0 or d.is_zero is True


def _same_equation(f: Eq, g: Eq) -> bool:
    """Two equations are equal when they define the same solution set."""
    lhs_f, lhs_g = f.lhs - f.rhs, g.lhs - g.rhs
    if lhs_f.free_symbols != lhs_g.free_symbols or not lhs_f.free_symbols:
        return False
    ratio = sympy.simplify(lhs_f / lhs_g)
    if ratio.is_number and ratio != 0 and ratio.is_finite:
        return True
    if len(lhs_f.free_symbols) == 1:
        x = next(iter(lhs_f.free_symbols))
        a, b = sympy.solveset(lhs_f, x, sympy.S.Complexes), sympy.solveset(lhs_g, x, sympy.S.Complexes)
        return isinstance(a, FiniteSet) and isinstance(b, FiniteSet) and elements_equal(list(a), list(b))
    return False


def elements_equal(a: list, b: list) -> bool:
    """Unordered comparison: every element of `a` pairs with a distinct equal element of `b`."""
    if len(a) != len(b):
        return False
    left = list(b)
    for x in a:
        hit = next((j for j, y in enumerate(left) if objects_equal(x, y)), None)
        if hit is None:
            return False
        left.pop(hit)
    return True


def _interval_equal(a: Interval, b: Interval) -> bool:
    return (a.left_open, a.right_open) == (b.left_open, b.right_open) and scalar_equal(a.start, b.start) \
        and scalar_equal(a.end, b.end)


def _sets_equal(a: Basic, b: Basic) -> bool:
    if isinstance(a, FiniteSet) and isinstance(b, FiniteSet):
        return elements_equal(list(a), list(b))
    if isinstance(a, Interval) and isinstance(b, Interval):
        return _interval_equal(a, b)
    if a == b:
        return True
    if isinstance(a, sympy.Union) and isinstance(b, sympy.Union) and len(a.args) == len(b.args):
        return all(_sets_equal(x, y) for x, y in zip(a.args, b.args))
    return False


def _normal_form(x: Basic) -> Basic:
    if is_inequality(x):
        as_set = as_real_set(x)
        return x if as_set is None else as_set
    return x


def objects_equal(gold: object, pred: object) -> bool:
    """Exact equality of two parsed answers under the rules of the module docstring."""
    if _is_assignment(pred) and not isinstance(gold, Eq):
        pred = pred.rhs
    if _is_assignment(gold) and not isinstance(pred, Eq):
        gold = gold.rhs
    gold, pred = _normal_form(gold), _normal_form(pred)
    if isinstance(gold, Eq) and isinstance(pred, Eq):
        return _same_equation(gold, pred)
    if isinstance(gold, Interval) and isinstance(pred, Tuple) or isinstance(pred, Interval) and isinstance(gold, Tuple):
        iv, tup = (gold, pred) if isinstance(gold, Interval) else (pred, gold)
        return iv.left_open and iv.right_open and len(tup) == 2 and \
            scalar_equal(iv.start, tup[0]) and scalar_equal(iv.end, tup[1])
    for one, other in ((gold, pred), (pred, gold)):
        if isinstance(one, FiniteSet) and len(one) == 1 and isinstance(other, sympy.Expr):
            return objects_equal(next(iter(one)), other)
    if isinstance(gold, sympy.Set) and isinstance(pred, sympy.Set):
        return _sets_equal(gold, pred)
    if isinstance(gold, Tuple) and isinstance(pred, Tuple):
        return len(gold) == len(pred) and all(objects_equal(x, y) for x, y in zip(gold, pred))
    if isinstance(gold, MatrixBase) and isinstance(pred, MatrixBase):
        return gold.shape == pred.shape and all(scalar_equal(x, y) for x, y in zip(gold, pred))
    if isinstance(gold, sympy.Expr) and isinstance(pred, sympy.Expr):
        return scalar_equal(gold, pred)
    return False
