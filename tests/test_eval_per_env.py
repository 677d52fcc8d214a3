"""Per-environment pass@1 of a mixture's held-out tasks (hand-worked)."""
from __future__ import annotations

import pytest

from vagent_jax.eval.per_env import format_per_env, per_env_pass_at_1


def test_groups_by_member_and_averages_over_tasks():
    tasks = [{"mix_env": "a"}, {"mix_env": "a"}, {"mix_env": "b"}, {"other": 1}]
    correct = [[True, False], [True, True], [False, False], [True, True]]
    out = per_env_pass_at_1(tasks, correct)
    assert set(out) == {"a", "b"}  # the untagged task belongs to no member
    assert out["a"]["pass@1"] == pytest.approx(0.75)  # (1/2 + 2/2) / 2
    assert out["b"]["pass@1"] == 0.0 and out["b"]["samples"] == 2
    lo, hi = out["a"]["ci95"]
    assert lo < 0.75 < hi
    assert "a  0.7500" in format_per_env(out)
    assert per_env_pass_at_1([{"x": 1}], [[True]]) == {}
