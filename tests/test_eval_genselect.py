"""Tests for vagent_jax.eval.genselect with a fake judge model."""
import re

import numpy as np
import pytest

from vagent_jax.eval.genselect import build_genselect_prompt, genselect, genselect_report, parse_judgment


def shown_solutions(prompt):
    """The candidate texts of a GenSelect prompt, in prompt order."""
    return re.findall(r"Solution \d+:\n(.*)", prompt)


def oracle_judge(prompt):
    """Picks the first shown solution marked (right); says nothing parseable otherwise."""
    for i, text in enumerate(shown_solutions(prompt)):
        if "(right)" in text:
            return f"Comparing... Judgment: 0\nOn reflection, Judgment: {i}"
    return "I cannot decide."


def test_prompt_lists_problem_and_candidates():
    p = build_genselect_prompt("What is 2+2?", ["it is 4", "it is 5", "it is 22"])
    assert "What is 2+2?" in p and shown_solutions(p) == ["it is 4", "it is 5", "it is 22"]
    assert "Judgment: IDX" in p and "0 to 2" in p
    with pytest.raises(ValueError, match="candidates is empty"):
        build_genselect_prompt("q", [])


def test_parse_takes_the_last_valid_match_else_a_seeded_random_pick():
    rng = np.random.default_rng(0)
    assert parse_judgment("Judgment: 1 ... final Judgment: 2", 4, rng) == (2, True)
    assert parse_judgment("Judgment: **3**", 4, rng) == (3, True)
    expected = int(np.random.default_rng(5).integers(3))
    assert parse_judgment("Judgment: 7", 3, np.random.default_rng(5)) == (expected, False)
    assert parse_judgment("no verdict", 3, np.random.default_rng(5)) == (expected, False)


def test_picks_map_back_to_the_original_solutions():
    solutions = ["x=1", "x=2 (right)", "x=3", "x=4", "x=5"]
    answers = ["1", "2", "3", "4", "5"]
    seen = []

    def judge(prompt):
        seen.append(shown_solutions(prompt))
        return oracle_judge(prompt)

    res = genselect("p", solutions, answers, judge, rng=np.random.default_rng(3), k=2, num_rounds=12)
    assert len(res.picks) == 12 and len(seen) == 12
    for shown, pick in zip(seen, res.picks):
        assert solutions[pick] in shown  # a pick is always one of the shown candidates
        if solutions[1] in shown:
            assert pick == 1
    assert res.invalid_judgments == sum(solutions[1] not in s for s in seen)
    again = genselect("p", solutions, answers, oracle_judge, rng=np.random.default_rng(3), k=2, num_rounds=12)
    assert again.picks == res.picks  # the rng alone fixes permutations and random picks
    all_shown = genselect("p", solutions, answers, oracle_judge, rng=np.random.default_rng(0), k=8, num_rounds=3)
    assert all_shown.answer == "2" and all_shown.invalid_judgments == 0


def test_report_by_hand():
    problems = ["p0", "p1"]
    solutions = [["a (right)", "b", "c"], ["d", "e", "f"]]
    answers = [["1", "2", "2"], ["5", "5", "6"]]
    labels = [[True, False, False], [False, False, False]]
    rep = genselect_report(problems, solutions, answers, labels, oracle_judge, rng=np.random.default_rng(0), k=8, num_rounds=3)
    # problem 0: pass@1 1/3, maj@3 0 ("2" wins), GenSelect 1 (oracle), pass@3 1; problem 1: all 0
    assert rep["pass@1"] == pytest.approx(1 / 6)
    assert rep["maj@N"] == 0.0 and rep["genselect@N"] == 0.5 and rep["pass@N"] == 0.5
    assert rep["invalid_judgment_rate"] == 0.5  # every round of problem 1 has no parseable verdict
    with pytest.raises(ValueError, match="problem 0 has mismatched"):
        genselect_report(["p"], [["a"]], [["1", "2"]], [[True]], oracle_judge, rng=np.random.default_rng(0))
