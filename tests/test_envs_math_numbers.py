"""Exact number reading: every spelling the verifier accepts gives an exact rational, never a float."""
from fractions import Fraction

from vagent_jax.envs.math_numbers import decimals_to_fractions, exact_number, parse_number


def test_exact_values():
    cases = {"03": 3, "-0": 0, "--3": 3, "- 7": -7, ".5": Fraction(1, 2), "3.": 3, "1.2500": Fraction(5, 4),
             r"0.\overline{3}": Fraction(1, 3), r"0.1\overline{6}": Fraction(1, 6), r"1.\overline{5}": Fraction(14, 9),
             "1.5e3": 1500, "2.5e-3": Fraction(1, 400), r"6.02 \times 10^{23}": 602 * 10 ** 21,
             r"\frac{-3}{4}": Fraction(-3, 4), r"\frac12": Fraction(1, 2), r"2\frac12": Fraction(5, 2),
             "2 1/2": Fraction(5, 2), r"-1\frac{1}{3}": Fraction(-4, 3), "40%": Fraction(2, 5),
             r"12.5\%": Fraction(1, 8), "12345678901234567891": 12345678901234567891}
    for text, value in cases.items():
        assert exact_number(text) == value, text


def test_finite_decimals_are_not_thirds():
    assert exact_number("0.3333333333333333333") != Fraction(1, 3)
    assert exact_number("0.3333333333333333333") == Fraction(3333333333333333333, 10 ** 19)


def test_thousands_only_when_allowed_and_well_formed():
    assert exact_number("1,234,567") == 1234567 and exact_number("1{,}000") == 1000
    assert exact_number("1,000", thousands=False) is None
    assert exact_number("12,34") is None and exact_number("1,2") is None


def test_rejects_what_is_not_one_number_or_too_big():
    for text in ["x", "1/0", "1e999999999", "2 3/2", r"\frac{1}{0}", "", "1..2"]:
        assert exact_number(text) is None, text
    assert parse_number("2.50").kind == "decimal" and parse_number("7/2").kind == "fraction"


def test_decimals_rewritten_as_exact_fractions():
    assert decimals_to_fractions(r"0.5x + 0.\overline{3}") == r"{\frac{1}{2}}x + {\frac{1}{3}}"
    assert decimals_to_fractions("3.14") == r"{\frac{157}{50}}"
