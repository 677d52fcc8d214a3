"""Simplest-form reasons, one per rule of docs/verifier.md section 3."""
from vagent_jax.envs.math_simplest import elements, simplest_form_problems


def _ok(value, ref_decimal=False, ref_percent=False):
    return not simplest_form_problems(value, ref_decimal, ref_percent)


def test_elements_of_sets_intervals_and_equations():
    assert elements(r"\{\frac{1}{2}, 3\}") == [r"\frac{1}{2}", "3"]
    assert elements(r"[\frac{1}{3}, 2)") == [r"\frac{1}{3}", "2"]
    assert elements(r"x = \frac{4}{6}") == ["x", r"\frac{4}{6}"]


def test_rationals_have_one_spelling_family():
    assert _ok("3") and _ok(r"-\frac{3}{4}") and _ok(r"\frac{-3}{4}") and _ok("7/5") and _ok(r"2\frac{1}{2}")
    for bad in [r"\frac{6}{8}", r"\frac{3}{-4}", r"\frac{5}{1}", "2^{10}", "5!", r"\log_2 8", r"\frac12+\frac14",
                "-(-3)", "--3", r"\sqrt{4}", "i^2", r"2\cdot 3"]:
        assert not _ok(bad), bad


def test_decimals_and_percentages_follow_the_reference():
    assert not _ok("0.75") and _ok("0.75", ref_decimal=True)
    assert not _ok("50%") and _ok("50%", ref_percent=True)


def test_radicals_fractions_and_like_terms():
    assert _ok(r"2\sqrt{2}") and _ok(r"\frac{\sqrt{2}}{2}") and _ok(r"\frac{1+\sqrt{5}}{2}") and _ok("3+2i")
    for bad in [r"\sqrt{8}", r"\sqrt{\frac{1}{2}}", r"\frac{1}{\sqrt{2}}", r"1/\sqrt{3}", r"\frac{1}{i}",
                r"\sqrt[3]{16}", r"\frac{2\pi}{4}", r"\frac{6x}{9}", r"\pi+\pi", r"\sqrt{2}\cdot\sqrt{3}", "(1+i)^2"]:
        assert not _ok(bad), bad
