"""Surface clean-up of one math answer value before it is compared: delimiters, unicode, spacing, units.

None of this changes the value: `$x$`, `\\(x\\)`, `\\[x\\]`, `\\left(`, `\\displaystyle`, `\\dfrac` and
unicode minus are only spellings. Units are split off (not dropped) so the caller can compare them.
"""
from __future__ import annotations

import re

_UNICODE = {"\u2212": "-", "\u2013": "-", "\u00d7": r"\times ", "\u00f7": "/", "\u03c0": r"\pi ",
            "\u221e": r"\infty ", "\u2205": r"\emptyset ", "\u221a": r"\sqrt ", "\u00b1": r"\pm ", "\u2264": r"\le ",
            "\u2265": r"\ge ", "\u2260": r"\neq ", "\u00b0": r"^\circ", "\u00a0": " ", "\u2009": " "}
_DELIMITERS_RE = re.compile(r"\\[()\[\]]|(?<!\\)\$")
_SPELLINGS = [(r"\dfrac", r"\frac"), (r"\tfrac", r"\frac"), (r"\displaystyle", ""), (r"\left", ""),
              (r"\right", ""), (r"\!", ""), (r"\varnothing", r"\emptyset"), (r"\{\}", r"\emptyset"),
              (r"\{ \}", r"\emptyset"), (r"\lbrace", r"\{"), (r"\rbrace", r"\}"), (r"\cdotp", r"\cdot"),
              (r"\ge ", r"\geq "), (r"\le ", r"\leq "), (r"\geqslant", r"\geq"), (r"\leqslant", r"\leq")]
_THIN_SPACE_THOUSANDS_RE = re.compile(r"(?<=\d)(?:\\,|\{,\}|\\ |~)(?=\d{3}(?!\d))")
_SPACES_RE = re.compile(r"(?<!\\)\\[,;:> ]|~|\\quad|\\qquad")

# unit spellings -> canonical name; plurals are folded by _canonical_unit
UNIT_ALIASES = {
    "cm": "centimeter", "centimetre": "centimeter", "mm": "millimeter", "millimetre": "millimeter",
    "m": "meter", "metre": "meter", "km": "kilometer", "kilometre": "kilometer", "kg": "kilogram",
    "g": "gram", "mg": "milligram", "s": "second", "sec": "second", "min": "minute", "h": "hour",
    "hr": "hour", "ft": "foot", "feet": "foot", "in": "inch", "inches": "inch", "mi": "mile", "yd": "yard",
    "l": "liter", "litre": "liter", "ml": "milliliter", "\\circ": "degree", "deg": "degree",
    "usd": "dollar", "mph": "mile/hour", "km/h": "kilometer/hour", "lb": "pound",
    "lbs": "pound", "oz": "ounce", "units": "unit", "cents": "cent",
}
# words that end a value's expression but are not units: prose, not measures
_NOT_UNITS = {"and", "or", "not", "is", "if", "but", "because", "since", "so", "then", "than", "plus",
              "minus", "times", "over", "maybe", "perhaps", "either", "neither", "nor", "the", "a", "an",
              "of", "to", "for", "when", "where", "which", "with", "without", "as", "at", "are", "be",
              "was", "it", "this", "that", "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp",
              "no", "none", "yes", "more", "less", "least", "most", "about", "approximately", "roughly",
              "around", "under", "nearly", "almost", "exactly", "even", "odd", "else", "otherwise", "all", "any", "only", "also", "correct", "wrong", "answer", "solution",
              "sqrt", "pi", "infty", "percent", "infinity", "undefined", "i", "x", "y", "z", "n", "k", "t", "e"}
_TEXT_UNIT_RE = re.compile(r"\\(?:text|mathrm|textrm|mbox|operatorname)\s*\{\s*([A-Za-z][A-Za-z./ ]*?)\s*\}"
                           r"(\s*\^\s*\{?\s*[23]\s*\}?)?\s*$")
_DEGREE_RE = re.compile(r"\s*\^\s*\{?\s*\\circ\s*\}?\s*(?:\\?[CF]\b)?\s*$|\s*\\circ\s*$")
_WORD_UNIT_RE = re.compile(r"(?<![\\A-Za-z])((?:square|cubic|sq\.?)\s+)?([A-Za-z][A-Za-z]*(?:/[A-Za-z]+)?)"
                           r"(\s*\^\s*\{?\s*[23]\s*\}?)?\s*$")
_CURRENCY_RE = re.compile(r"^(?:\\\$|\$(?=\s*\d)|USD\s*)")


def normalise(text: str) -> str:
    """Spelling-only clean-up of one value: unicode, delimiters, \\left/\\right, \\dfrac, spaces, final period."""
    s = text
    for a, b in _UNICODE.items():
        s = s.replace(a, b)
    s = _DELIMITERS_RE.sub(" ", s).strip()
    if s.endswith(".") and not s.endswith(".."):
        s = s[:-1].rstrip()
    for a, b in _SPELLINGS:
        s = s.replace(a, b)
    s = _THIN_SPACE_THOUSANDS_RE.sub("{,}", s)
    s = _SPACES_RE.sub(" ", s)
    return re.sub(r"\s+", " ", s).strip()


def _canonical_unit(raw: str) -> str:
    u = re.sub(r"\s+", " ", raw.strip().lower())
    power = ""
    m = re.match(r"^(?:square|sq\.?)\s+(.*)$", u)
    if m:
        u, power = m.group(1), "^2"
    m = re.match(r"^cubic\s+(.*)$", u)
    if m:
        u, power = m.group(1), "^3"
    m = re.match(r"^(.*?)\s*\^\s*\{?\s*([23])\s*\}?$", u)
    if m:
        u, power = m.group(1), "^" + m.group(2)
    u = u.strip()
    if u not in UNIT_ALIASES and u.endswith("s") and len(u) > 3:
        u = u[:-1]
    return UNIT_ALIASES.get(u, u) + power


def split_unit(value: str) -> tuple[str, str | None]:
    """(expression, canonical unit or None): a trailing \\text{cm}/`cm`/`meters`/degree sign, or a leading \\$."""
    s = value.strip()
    unit = None
    m = _CURRENCY_RE.match(s)
    if m:
        s, unit = s[m.end():].strip(), "dollar"
    m = _DEGREE_RE.search(s)
    if m and m.start() > 0:
        return s[:m.start()].strip(), "degree"
    m = _TEXT_UNIT_RE.search(s)
    if m and m.start() > 0 and not set(m.group(1).lower().split()) & _NOT_UNITS:
        return s[:m.start()].strip(), _canonical_unit(m.group(1) + (m.group(2) or ""))
    core, word_unit = _split_word_unit(s)
    return core, word_unit or unit


def _split_word_unit(s: str) -> tuple[str, str | None]:
    """Trailing plain words after a value (`12 meters`, `5 square units`); at most two words, no prose."""
    m = _WORD_UNIT_RE.search(s)
    if not m or m.start() == 0:
        return s, None
    word = m.group(2).lower()
    core = s[:m.start()].rstrip()
    if word in _NOT_UNITS or not core or not re.search(r"[\d}).]\s*$", core):
        return s, None
    if len(word) == 1 and word not in UNIT_ALIASES:
        return s, None
    if not s[m.start() - 1].isspace() and word not in UNIT_ALIASES and len(word) < 2:
        return s, None
    return core, _canonical_unit((m.group(1) or "") + m.group(2) + (m.group(3) or ""))


def same_unit(a: str | None, b: str | None) -> bool:
    """Units agree when equal after canonicalisation, or when either side has none (the unit is implied)."""
    return a is None or b is None or a == b
