"""DAPO dynamic-sampling rounds: a round of signal-free groups asks for another, the round cap stops it,
the kept groups are exactly the signal-carrying ones in the order drawn, and their shaped rewards stay
row-aligned with them."""
from __future__ import annotations

import numpy as np
import pytest

from eval_fixture import scripted_result
from vagent_jax.envs import get_env
from vagent_jax.rl.dynamic_sampling import sample_until_signal, verdicts_and_rewards
from vagent_jax.rl.rollout_batch import RewardShapingConfig

G = 2


def rollout(name: str, i: int, correct: bool) -> tuple[str, int, bool]:
    """A stand-in rollout: (group name, index in the group, verdict)."""
    return (name, i, correct)


def group(name: str, verdicts: str) -> list[tuple[str, int, bool]]:
    """G rollouts of one prompt; verdicts as '10' = first correct, second wrong."""
    return [rollout(name, i, v == "1") for i, v in enumerate(verdicts)]


def scripted_rounds(*rounds: list) -> tuple:
    """draw(r) returns rounds[r] (a flat list of rollouts); calls counts the rounds drawn."""
    calls: list[int] = []

    def draw(r: int) -> list:
        calls.append(r)
        return rounds[r]

    return draw, calls


def score(rollouts: list) -> tuple[np.ndarray, np.ndarray]:
    """Verdicts, and a reward that differs per rollout (10 x group letter + index) so alignment shows."""
    correct = np.array([c for _, _, c in rollouts], bool)
    rewards = np.array([10.0 * (ord(n[0]) - ord("a")) + i for n, i, _ in rollouts], np.float32)
    return correct, rewards


def test_a_round_of_zero_variance_groups_draws_another() -> None:
    draw, calls = scripted_rounds(group("a", "11") + group("b", "00"), group("c", "10") + group("d", "01"))
    got = sample_until_signal(draw, score, groups=2, group_size=G, max_rounds=3)
    assert calls == [0, 1]
    assert [(n, i) for n, i, _ in got.rollouts] == [("c", 0), ("c", 1), ("d", 0), ("d", 1)]
    np.testing.assert_array_equal(got.rewards, [20, 21, 30, 31])
    assert (got.rounds, got.dropped, got.groups_kept) == (2, 2, 2)
    assert len(got.every) == 8  # every drawn rollout reaches the step's metrics, dropped ones too


def test_the_round_cap_stops_a_step_without_signal() -> None:
    draw, calls = scripted_rounds(*[group(n, "11") + group(n + "x", "00") for n in "abcde"])
    got = sample_until_signal(draw, score, groups=2, group_size=G, max_rounds=3)
    assert calls == [0, 1, 2]
    assert got.rollouts == [] and got.rewards.shape == (0,) and got.rewards.dtype == np.float32
    assert (got.rounds, got.dropped, got.groups_kept) == (3, 6, 0)
    assert len(got.every) == 12


def test_kept_groups_are_the_signal_ones_in_draw_order_and_extra_ones_are_cut() -> None:
    first = group("a", "10") + group("b", "00") + group("c", "01")
    second = group("d", "11") + group("e", "10") + group("f", "01")
    draw, calls = scripted_rounds(first, second, group("g", "10") * 3)
    got = sample_until_signal(draw, score, groups=3, group_size=G, max_rounds=5)
    assert calls == [0, 1]  # full after the second round: no third draw
    assert [n for n, i, _ in got.rollouts] == ["a", "a", "c", "c", "e", "e"]  # f had signal but the batch was full
    np.testing.assert_array_equal(got.rewards, [0, 1, 20, 21, 40, 41])
    assert (got.dropped, got.groups_kept) == (2, 3)


def test_without_filtering_one_round_keeps_every_group() -> None:
    draw, calls = scripted_rounds(group("a", "11") + group("b", "00"), group("c", "10"))
    got = sample_until_signal(draw, score, groups=4, group_size=G, max_rounds=3, filter_groups=False)
    assert calls == [0]
    assert [n for n, _, _ in got.rollouts] == ["a", "a", "b", "b"]
    assert (got.rounds, got.dropped, got.groups_kept) == (1, 0, 2)


def test_the_filter_reads_verdicts_not_rewards() -> None:
    """An all-correct group whose shaped rewards differ (a length penalty) carries no signal."""
    def penalised(rollouts: list) -> tuple[np.ndarray, np.ndarray]:
        correct, _ = score(rollouts)
        return correct, np.array([1.0, 0.2] * (len(rollouts) // G), np.float32)

    draw, _ = scripted_rounds(group("a", "11") + group("b", "10"))
    got = sample_until_signal(draw, penalised, groups=2, group_size=G, max_rounds=1)
    assert [n for n, _, _ in got.rollouts] == ["b", "b"] and got.dropped == 1


def test_bad_rounds_and_arguments_stop() -> None:
    draw, _ = scripted_rounds(group("a", "10")[:1])
    with pytest.raises(ValueError, match="not whole groups of 2"):
        sample_until_signal(draw, score, groups=1, group_size=G, max_rounds=1)
    with pytest.raises(ValueError, match="max_rounds >= 1"):
        sample_until_signal(draw, score, groups=1, group_size=G, max_rounds=0)


def test_verdicts_and_rewards_of_rollout_results_shape_at_l_max() -> None:
    task = get_env("calculator").generate_tasks(1, 0, 1)[0]
    results = [scripted_result(task, "2", True, [1.0] * 4), scripted_result(task, "2", True, [1.0] * 10),
               scripted_result(task, "3", False, [1.0] * 4), scripted_result(task, "3", False, [1.0] * 4)]
    correct, rewards = verdicts_and_rewards(results, G, RewardShapingConfig(overlong_cache_len=4), l_max=10)
    assert correct.dtype == bool and correct.tolist() == [True, True, False, False]
    # 4 tokens are clear of the soft-punishment zone (10 - 4, 10]; 10 tokens take its full -1
    np.testing.assert_allclose(rewards, [1.0, 0.0, 0.0, 0.0], atol=1e-6)
