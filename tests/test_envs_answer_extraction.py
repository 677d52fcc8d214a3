"""Final-answer extraction rules, and the environment reward path that must apply the same rules."""
import json
from pathlib import Path

from vagent_jax.envs.answer_extraction import extract_answer, is_expression, split_alternatives
from vagent_jax.envs.base import Message
from vagent_jax.envs.math_verifier import verify_math
from vagent_jax.envs.registry import get_env

CASES = [json.loads(line) for line in (Path(__file__).parent / "data" / "verifier_cases.jsonl").read_text().splitlines()
         if line.strip()]


def _values(text):
    found = extract_answer(text)
    return None if found is None else found.values


def test_priority_box_then_statement_then_expression():
    assert _values(r"The answer is 3. So \boxed{4}") == ("4",)
    assert _values("We add 2 and 2. The answer is 4.") == ("4",)
    assert _values(r"$\frac{3}{4}$") == (r"\frac{3}{4}",)
    assert _values("We add 2 and 2 to get 4") is None  # numbers in the working do not count
    assert _values("<think>the answer is 9</think>The answer is 10.") == ("10",)
    assert _values("<answer>5</answer> then \\boxed{6}") == ("6",)


def test_sets_alternatives_and_negations():
    assert _values(r"\boxed{2}, \boxed{3}") == ("2", "3")
    assert _values(r"\boxed{2} then after more work \boxed{3}") == ("3",)
    assert _values(r"\boxed{5} and \boxed{5}") == ("5",)
    assert _values("x = 3 or x = -3") == ("x = 3", "x = -3")
    assert _values("The answer is not 3.") is None
    assert _values("The answer is 4, not 3.") == ("4",)
    assert split_alternatives(r"\{a, b \text{ or } c\}") == [r"\{a, b \text{ or } c\}"]


def test_is_expression():
    assert is_expression(r"2\sqrt{3} + x") and is_expression("12 meters") and is_expression("(1, 2]")
    assert not is_expression("I think 7") and not is_expression("seven") and not is_expression("x is 3")


def test_rendered_answer_extracts_back_to_the_same_verdict():
    """The environments hand FinalAnswer.text to the verifier: it must give the verdict of the full text."""
    for c in CASES:
        found = extract_answer(c["answer"])
        if found is None:
            continue
        assert extract_answer(found.text).values == found.values, c
    for c in [c for c in CASES if c["rule"].startswith(("extraction", "boxes", "alternatives", "self_corr"))]:
        found = extract_answer(c["answer"])
        rendered = verify_math(found.text, c["reference"], c["mode"]) if found else False
        assert rendered == c["expected"], c


def test_math_environment_rewards_prose_answers():
    env = get_env("math_answer")
    task = {"question": "Compute 1/4 + 1/2.", "answer": "3/4", "mode": "equivalent", "steps": ""}
    for text, correct in [("The answer is 3/4.", True), ("Final answer: 0.75", True), ("3/4", True),
                          (r"\boxed{\frac{3}{4}}", True), ("<answer>3/4</answer>", True),
                          ("The answer is 3/4 or 1/2.", False), ("The answer is not 3/4.", False),
                          ("The answer is 1/2. Wait, no: the answer is 3/4.", True)]:
        step = env.step(task, env.initial_messages(task) + [Message("assistant", text)])
        assert step.done and step.reward.correct is correct, text
    step = env.step(task, env.initial_messages(task) + [Message("assistant", "1/4 + 1/2 makes 3/4")])
    assert step.reward.errors == ("no_answer",)
    assert env.final_answer("The answer is $\\frac{3}{4}$.") == r"\frac{3}{4}"
