"""The data-mix schedule: fixed, linear ramp (hand-worked), pass-rate band, and its checkpoint state."""
from __future__ import annotations

import pytest

from vagent_jax.data.mixture import MixEntry, MixScheduleConfig
from vagent_jax.rl.mix_schedule import MixSchedule, band_weights, linear_weights

ENTRIES = [MixEntry(env="calculator", name="easy", weight=1.0, final_weight=0.0),
           MixEntry(env="countdown", name="hard", weight=0.0, final_weight=1.0)]


def test_linear_ramp_hand_worked():
    assert linear_weights([1, 0], [0, 1], 25, 100) == [0.75, 0.25]
    assert linear_weights([1, 0], [0, 1], 0, 100) == [1, 0]
    assert linear_weights([1, 0], [0, 1], 250, 100) == [0, 1]  # held at the end
    s = MixSchedule(ENTRIES, MixScheduleConfig(kind="linear", ramp_steps=4))
    assert [s.weights(k) for k in (0, 2, 4)] == [[1, 0], [0.5, 0.5], [0, 1]]


def test_fixed_ignores_final_weight():
    assert MixSchedule(ENTRIES, MixScheduleConfig()).weights(100) == [1.0, 0.0]


def test_band_weights_favour_members_inside_the_band():
    assert band_weights([1, 1, 1, 1], [0.5, 0.95, 0.0, None], (0.1, 0.9), 0.1) == [1, 0.1, 0.1, 1]
    both = [MixEntry(env="calculator", name="a"), MixEntry(env="countdown", name="b")]
    s = MixSchedule(both, MixScheduleConfig(kind="pass_rate_band", ema=0.5, outside=0.2))
    assert s.weights(0) == [1, 1]  # nothing measured yet: everything counts as in the band
    s.observe({"a": 1.0, "b": 0.5})
    assert s.weights(1) == [0.2, 1.0]
    s.observe({"a": 0.6})  # smoothed: 0.5 * 1.0 + 0.5 * 0.6 = 0.8, back inside (0.1, 0.9)
    assert s.rates["a"] == pytest.approx(0.8) and s.weights(2) == [1.0, 1.0]
    resumed = MixSchedule(both, s.cfg, s.state())
    assert resumed.weights(3) == s.weights(3) and resumed.rates == s.rates


def test_band_falls_back_to_start_weights_when_all_are_zero():
    one = [MixEntry(env="calculator", name="a", weight=2.0)]
    s = MixSchedule(one, MixScheduleConfig(kind="pass_rate_band", outside=0.5))
    s.observe({"a": 1.0})
    assert s.weights(1) == [1.0]  # 2 x 0.5
