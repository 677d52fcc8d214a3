"""Spelling clean-up and unit splitting of one answer value."""
from vagent_jax.envs.math_text import normalise, same_unit, split_unit


def test_spelling_only():
    assert normalise(r"$\dfrac{1}{2}$.") == r"\frac{1}{2}"
    assert normalise(r"\(\left(1, 2\right)\)") == "(1, 2)"
    assert normalise("\u22123") == "-3" and normalise(r"\varnothing") == r"\emptyset"
    assert normalise(r"1\,000") == "1{,}000"
    assert normalise(r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}") == r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"


def test_units():
    assert split_unit(r"5\text{ cm}") == ("5", "centimeter")
    assert split_unit("5 centimeters") == ("5", "centimeter")
    assert split_unit(r"12\text{ m}^2") == ("12", "meter^2") == split_unit("12 square meters")
    assert split_unit(r"90^\circ") == ("90", "degree") == split_unit("90 degrees")
    assert split_unit(r"\$20") == ("20", "dollar")
    assert split_unit("2x") == ("2x", None) and split_unit("2 x") == ("2 x", None)
    assert split_unit("3 or 4")[1] is None and split_unit("40 percent")[1] is None
    assert same_unit("meter", None) and not same_unit("meter", "kilometer")
