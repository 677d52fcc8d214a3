"""Exact, bounded arithmetic on expression strings, by walking the Python AST (no eval).

Only number literals, + - * / // % **, unary +/- and parentheses are allowed. Values are Fractions, so
1/3*3 == 1 exactly. Sizes are bounded (expression length, node count, exponent, bits of every
intermediate value) so a hostile expression like 9**9**9 is refused quickly instead of hanging a worker.
"""
from __future__ import annotations

import ast
import warnings
from dataclasses import dataclass
from fractions import Fraction

MAX_EXPR_CHARS = 500
MAX_NODES = 200
MAX_BITS = 4096
MAX_EXPONENT = 1000

_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**"}


class ExpressionError(ValueError):
    """The expression is not allowed arithmetic, too large, or undefined (division by zero)."""


@dataclass(frozen=True)
class Evaluation:
    """Value of an expression, its number literals in order, and one line per operation performed."""

    value: Fraction
    literals: tuple[Fraction, ...]
    steps: tuple[str, ...]


def format_number(x: Fraction) -> str:
    """Integer as "12"; terminating decimal as "2.5"; otherwise the reduced fraction "1/3"."""
    if x.denominator == 1:
        return str(x.numerator)
    d = x.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d == 1:
        digits = 0
        while (x * 10**digits).denominator != 1:
            digits += 1
        sign = "-" if x < 0 else ""
        scaled = abs(x.numerator * 10**digits // x.denominator)
        whole, frac = divmod(scaled, 10**digits)
        return f"{sign}{whole}.{str(frac).zfill(digits)}"
    return f"{x.numerator}/{x.denominator}"


def _check_size(x: Fraction, expr: str) -> Fraction:
    if x.numerator.bit_length() > MAX_BITS or x.denominator.bit_length() > MAX_BITS:
        raise ExpressionError(f"intermediate value too large (> {MAX_BITS} bits) in {expr!r}")
    return x


def _binop(op: type, a: Fraction, b: Fraction, expr: str) -> Fraction:
    if op is ast.Add:
        return a + b
    if op is ast.Sub:
        return a - b
    if op is ast.Mult:
        return a * b
    if op in (ast.Div, ast.FloorDiv, ast.Mod) and b == 0:
        raise ExpressionError(f"division by zero in {expr!r}")
    if op is ast.Div:
        return a / b
    if op is ast.FloorDiv:
        return Fraction(a // b)
    if op is ast.Mod:
        return a % b
    # power: integer exponents only, bounded so the result stays within MAX_BITS
    if b.denominator != 1:
        raise ExpressionError(f"non-integer exponent {format_number(b)} in {expr!r}")
    e = b.numerator
    if abs(e) > MAX_EXPONENT:
        raise ExpressionError(f"exponent {e} too large in {expr!r}")
    if a == 0 and e < 0:
        raise ExpressionError(f"division by zero (0 to a negative power) in {expr!r}")
    bits = max(a.numerator.bit_length(), a.denominator.bit_length())
    if bits * abs(e) > MAX_BITS + 64:
        raise ExpressionError(f"power too large in {expr!r}")
    return a**e


def evaluate(expr: str) -> Evaluation:
    """Evaluate `expr` exactly; raises ExpressionError naming the problem for anything not allowed."""
    if not isinstance(expr, str):
        raise ExpressionError(f"expression must be a string, got {type(expr).__name__}")
    if len(expr) > MAX_EXPR_CHARS:
        raise ExpressionError(f"expression longer than {MAX_EXPR_CHARS} characters")
    text = expr.replace("×", "*").replace("÷", "/").replace("^", "**").strip()
    try:
        with warnings.catch_warnings():  # model-written text ("12 * 77x") must not print parser warnings
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise ExpressionError(f"cannot parse {expr!r}: {e.msg}") from None
    n_nodes = sum(1 for _ in ast.walk(tree))
    if n_nodes > MAX_NODES:
        raise ExpressionError(f"expression has {n_nodes} nodes, limit {MAX_NODES}")
    literals: list[Fraction] = []
    steps: list[str] = []

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            src = ast.get_source_segment(text, node) or repr(node.value)
            value = Fraction(src.replace("_", "")) if type(node.value) is float else Fraction(node.value)
            literals.append(_check_size(value, expr))
            return value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            v = walk(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            a, b = walk(node.left), walk(node.right)
            out = _check_size(_binop(type(node.op), a, b, expr), expr)
            steps.append(f"{format_number(a)} {_OPS[type(node.op)]} {format_number(b)} = {format_number(out)}")
            return out
        raise ExpressionError(f"{type(node).__name__} is not allowed in {expr!r}; only numbers and + - * / // % **")

    try:
        value = walk(tree)
    except (ValueError, ZeroDivisionError, OverflowError) as e:
        if isinstance(e, ExpressionError):
            raise
        raise ExpressionError(f"cannot evaluate {expr!r}: {e}") from None
    return Evaluation(value, tuple(literals), tuple(steps))
