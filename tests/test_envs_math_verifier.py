"""The math verifier against labelled tricky cases: no false positives, no false negatives."""
import json
from collections import Counter
from pathlib import Path

import pytest

from vagent_jax.envs.math_verifier import exact_number, normalise, unreduced_fractions, verify_math

CASES = [json.loads(line) for line in (Path(__file__).parent / "data" / "verifier_cases.jsonl").read_text().splitlines()
         if line.strip()]


def test_case_file_is_rich_enough():
    assert len(CASES) >= 150
    labels = Counter(c["expected"] for c in CASES)
    assert labels[True] >= 50 and labels[False] >= 50
    assert {c["mode"] for c in CASES} == {"equivalent", "simplest"}
    assert len({(c["answer"], c["reference"], c["mode"]) for c in CASES}) == len(CASES), "duplicate cases"


def test_no_false_positives_or_negatives():
    false_pos, false_neg = [], []
    for c in CASES:
        got = verify_math(c["answer"], c["reference"], c["mode"])
        if got and not c["expected"]:
            false_pos.append(c)
        elif not got and c["expected"]:
            false_neg.append(c)
    assert (false_pos, false_neg) == ([], []), f"{len(false_pos)} false positives, {len(false_neg)} false negatives"


def test_normalisation_helpers():
    assert normalise("1,234,567") == "1234567" and normalise("1,2") == "1,2" and normalise("−3.") == "-3"
    assert normalise(r"\$5") == "5"
    assert exact_number("0.333") != exact_number("1/3")
    assert exact_number(r"1\frac{1}{2}") == exact_number("3/2")
    assert exact_number("x") is None
    assert unreduced_fractions(r"\frac{2}{4} + 1/3 + 6/3") == [r"\frac{2}{4}", "6/3"]


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="mode"):
        verify_math("1", "1", mode="fuzzy")
