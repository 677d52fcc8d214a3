"""Which part of a model's response is its final answer (the rules every math environment rewards by).

In order: the last `\\boxed{}` (or `<answer>...</answer>`, whichever comes later); else the last explicit
statement ("the answer is ...", "final answer: ..."); else the whole response when it is only an
expression. Numbers in the working (`<think>` blocks, prose) never count. Boxes written next to each
other (`\\boxed{2}, \\boxed{3}`) list a set; "3 or 4" lists alternatives, which only a set reference can
match; "the answer is not 3" asserts nothing. A later box or statement replaces an earlier one, so a
self-correction counts as its last value.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from vagent_jax.envs.math_text import normalise, split_unit

MAX_TEXT_CHARS = 20_000  # only the tail of a longer response is read
MAX_VALUE_CHARS = 400

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)
_STATEMENT_RE = re.compile(
    r"(?i)(?:final\s+answer|\banswer)(?:\s+to\s+[^.:\n$]{1,60}?)?\s*(?:\*\*)?\s*"
    r"(?:is\s*:?|:|=|would\s+be|will\s+be|should\s+be)")
_HEDGES_RE = re.compile(r"(?i)^(?:(?:simply|just|exactly|therefore|thus|clearly|either|then)\b[\s,]*)+")
_NEGATION_RE = re.compile(r"(?i)^(?:n't|not\b|never\b|no\s+longer\b)|^\\(?:text|mathrm)\{\s*not\b")
_TRAILING_NEGATION_RE = re.compile(r"(?i),?\s+(?:and\s+|but\s+)?not\b")
_ALTERNATIVE_RE = re.compile(r"\s*,?\s*(?:\\(?:text|mathrm|textrm)\s*\{\s*or\s*\}|\bor\b|\\lor\b|\\vee\b)\s*")
_BOX_GAP_TOKENS_RE = re.compile(r"\\text\s*\{\s*(?:and|or|,)?\s*\}|\\quad|\\qquad|\\\\|\\,|\band\b|\bor\b"
                                r"|[A-Za-z](?:_\{?\w+\}?)?\s*=|[\s,;$&.]")
# words that may appear in an expression; any other word of 3+ letters (or these 2-letter ones) is prose
_MATH_WORDS = {"sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "sinh", "cosh",
               "tanh", "log", "ln", "exp", "lim", "max", "min", "gcd", "lcm", "det", "mod", "sqrt", "frac",
               "pi", "infty", "text", "mathrm", "circ", "cdot", "times", "emptyset", "pm", "mp", "percent",
               "pmatrix", "bmatrix", "matrix", "vmatrix"}
_PROSE_2 = {"is", "so", "it", "be", "we", "of", "to", "an", "as", "at", "if", "no", "on", "by", "do",
            "my", "me", "up", "am", "or", "and", "us", "he", "hi"}


@dataclass(frozen=True)
class FinalAnswer:
    """The asserted answer: one value, or several that together list a set. `source` says which rule."""

    values: tuple[str, ...]
    source: str  # "boxed", "answer_tag", "statement", "expression"

    @property
    def text(self) -> str:
        """A string that extracts back to exactly these values (for logs, votes, re-verification)."""
        if len(self.values) == 1:
            v = self.values[0]
            again = extract_answer(v)
            return v if again is not None and again.values == self.values else f"\\boxed{{{v}}}"
        return ", ".join(f"\\boxed{{{v}}}" for v in self.values)


def _box_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of each top-level \\boxed{...}/\\fbox{...}, braces matched; unclosed ones dropped."""
    spans: list[tuple[int, int, str]] = []
    pos = 0
    while True:
        m = _BOX_RE.search(text, pos)
        if not m:
            return spans
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth:
            return spans
        spans.append((m.start(), j, text[m.end():j - 1]))
        pos = j


def _response(text: str) -> str:
    """The text outside the working: closed <think> blocks removed, an unclosed one cut to the end."""
    s = _THINK_RE.sub(" ", text[-MAX_TEXT_CHARS:])
    cut = s.find("<think>")
    return s[:cut] if cut >= 0 else s


def _balanced(s: str) -> bool:
    depth = 0
    for ch in s:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def split_alternatives(value: str) -> list[str]:
    """`x = 3 or x = -3` -> [`x = 3`, `x = -3`]; splits only outside braces."""
    parts = [p.strip(" ,") for p in _ALTERNATIVE_RE.split(value)]
    if len(parts) > 1 and all(p and _balanced(p) for p in parts):
        return parts
    return [value.strip()]


def is_expression(value: str) -> bool:
    """True when `value` is math only (numbers, symbols, LaTeX, a trailing unit), with no prose words."""
    core, _ = split_unit(normalise(value))
    if not core or len(core) > MAX_VALUE_CHARS or not _balanced(core) or not re.search(r"[\w\\]", core):
        return False
    if re.search(r"[?!\"]|\.\s+\w", core):
        return False
    for word in re.findall(r"(?<![\\A-Za-z])[A-Za-z]{2,}(?![A-Za-z])", core):
        w = word.lower()
        if w in _PROSE_2 or (len(w) > 2 and w not in _MATH_WORDS):
            return False
    return True


def _unwrap(value: str) -> str:
    v = normalise(value)
    inner = _box_spans(v)
    if len(inner) == 1 and inner[0][0] == 0 and inner[0][1] == len(v):
        return _unwrap(inner[0][2])
    return v


def _values(raw: list[str], source: str) -> FinalAnswer | None:
    """Split alternatives, drop exact repeats; None when a value is empty, too long or a negation."""
    out: list[str] = []
    for r in raw:
        for v in split_alternatives(_unwrap(r)):
            v = _unwrap(v)
            if not v or len(v) > MAX_VALUE_CHARS or _NEGATION_RE.search(v):
                return None
            if v not in out:
                out.append(v)
    return FinalAnswer(tuple(out), source) if out else None


def _last_box_group(text: str, spans: list[tuple[int, int, str]]) -> list[str]:
    """Contents of the last box and of the boxes just before it that are separated only by `,`/`and`/`or`."""
    group = [spans[-1]]
    for prev in reversed(spans[:-1]):
        gap = text[prev[1]:group[0][0]]
        if len(gap) > 40 or _BOX_GAP_TOKENS_RE.sub("", gap):
            break
        group.insert(0, prev)
    return [c for _, _, c in group]


def _statement_tail(text: str, start: int) -> str:
    """The rest of the sentence after "the answer is": up to a newline, `. `, `!` or `?` outside math."""
    s = text[start:start + 2 * MAX_VALUE_CHARS].lstrip(" *:")
    for left, right in (("$$", "$$"), (r"\[", r"\]")):
        if s.startswith(left):
            end = s.find(right, len(left))
            return s[:end + len(right)] if end > 0 else s
    in_math, depth = False, 0
    for j, ch in enumerate(s):
        if ch == "$":
            in_math = not in_math
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if in_math or depth > 0:
            continue
        nxt = s[j + 1:j + 2]
        if ch == "\n" or ch in "!?" or (ch == "." and (not nxt or nxt.isspace())):
            return s[:j]
    return s


def _from_statement(text: str) -> FinalAnswer | None:
    matches = list(_STATEMENT_RE.finditer(text))
    if not matches:
        return None
    tail = _HEDGES_RE.sub("", _statement_tail(text, matches[-1].end()).strip().strip("*").strip())
    if not tail or _NEGATION_RE.search(tail):
        return None
    tail = _TRAILING_NEGATION_RE.split(tail)[0]  # "4, not 3" asserts 4
    parts = split_alternatives(normalise(tail))
    if not all(is_expression(p) for p in parts):
        return None
    return _values(parts, "statement")


def _from_text(text: str, explicit: bool) -> FinalAnswer | None:
    """Boxes, then statements, then the whole text (only if it is an expression, or `explicit`)."""
    spans = _box_spans(text)
    if spans:
        return _values(_last_box_group(text, spans), "boxed")
    found = _from_statement(text)
    if found is not None or _STATEMENT_RE.search(text):
        return found
    body = text.strip()
    if not body:
        return None
    parts = split_alternatives(normalise(body))
    if explicit or all(is_expression(p) for p in parts):
        return _values(parts, "answer_tag" if explicit else "expression")
    return None


def extract_answer(text: str) -> FinalAnswer | None:
    """The final answer asserted by a model response, or None when it asserts none (see module docstring)."""
    if not isinstance(text, str):
        return None
    response = _response(text)
    tags = list(_ANSWER_TAG_RE.finditer(response))
    spans = _box_spans(response)
    if tags and (not spans or tags[-1].end() >= spans[-1][1]):
        return _from_text(tags[-1].group(1), explicit=True)
    return _from_text(response, explicit=False)
