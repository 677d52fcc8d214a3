"""scripts/study_entropy.py: the fit of R = -a exp(H) + b, the entropy-collapse step, the table, option errors,
and (quick mode) the whole study end to end: SFT once, two methods, held-out pass@k, resumable outputs."""
import json
import math

import numpy as np
import pytest
from script_module import load_script


def test_fit_recovers_a_b_and_r2():
    se = load_script("study_entropy")
    h = np.linspace(0.05, 1.2, 30)
    exact = se.fit_entropy_reward(h, -0.4 * np.exp(h) + 1.1)
    assert math.isclose(exact["a"], 0.4, rel_tol=1e-9) and math.isclose(exact["b"], 1.1, rel_tol=1e-9)
    assert math.isclose(exact["r2"], 1.0, rel_tol=1e-12)
    noisy = se.fit_entropy_reward(h, -0.4 * np.exp(h) + 1.1 + np.random.default_rng(0).normal(0, 0.05, h.size))
    assert 0.5 < noisy["r2"] < 1.0 and abs(noisy["a"] - 0.4) < 0.1
    # steps that logged nothing (NaN) are left out, and too few points give NaN instead of a fit
    with_gaps = se.fit_entropy_reward(np.r_[h, np.nan], np.r_[-0.4 * np.exp(h) + 1.1, 0.3])
    assert math.isclose(with_gaps["a"], 0.4, rel_tol=1e-9)
    assert all(math.isnan(v) for v in se.fit_entropy_reward(h[:2], h[:2]).values())


def test_collapse_step_is_the_first_step_below_a_tenth_of_the_start():
    se = load_script("study_entropy")
    h = np.array([1.0, 1.0, 1.0, 0.5, 0.2, np.nan, 0.09, 0.05])
    assert se.collapse_step(h) == 7
    assert se.collapse_step(np.array([1.0, 0.9, 0.8])) is None
    assert se.collapse_step(np.array([np.nan, np.nan])) is None


@pytest.mark.parametrize("argv, word", [(["--steps", "0"], "--steps"), (["--methods", "dapo,ppo"], "--methods"),
                                        (["--group-size", "1"], "--group-size"), (["--k", "0"], "--k")])
def test_bad_options_are_named(argv, word, capsys):
    se = load_script("study_entropy")
    with pytest.raises(SystemExit):
        se.parse_args(argv)
    assert word in capsys.readouterr().err


def test_a_held_out_split_that_cannot_be_drawn_stops_before_sft(tmp_path, monkeypatch):
    import vagent_jax.testing  # noqa: F401  (registers ten_questions: 10 questions, all among the training tasks)
    from vagent_jax.config import ConfigError

    se = load_script("study_entropy")
    monkeypatch.setattr(se, "ensure_policy", lambda args, out: pytest.fail("SFT ran before the held-out check"))
    with pytest.raises(ConfigError, match="tasks.eval_tasks"):
        se.main(["--env", "ten_questions", "--difficulty", "1", "--out", str(tmp_path)])


def _fake_policy(se, monkeypatch, pass_at_1: float) -> list[str]:
    """Replace the SFT and held-out evaluation by a fixed pass@1; returns the list RL runs are logged to."""
    rl_runs: list[str] = []
    monkeypatch.setattr(se, "ensure_policy", lambda args, out: out / "sft-fake")
    monkeypatch.setattr(se, "held_out_pass_at_k", lambda args, out, d: {"pass@1": pass_at_1, "pass@4": 0.7})
    monkeypatch.setattr(se, "run_method", lambda args, out, policy, m, seed: rl_runs.append(m) or 1 / 0)
    return rl_runs


@pytest.mark.parametrize("pass_at_1, in_band", [(0.35, True), (0.05, False), (0.9, False)])
def test_calibrate_stops_after_the_band_check_and_reports_pass_at_1(tmp_path, monkeypatch, capsys, pass_at_1,
                                                                       in_band):
    se = load_script("study_entropy")
    rl_runs = _fake_policy(se, monkeypatch, pass_at_1)
    argv = ["--calibrate", "--env", "countdown", "--difficulty", "1", "--sft-steps", "123", "--out", str(tmp_path)]
    ret = se.main(argv)
    assert rl_runs == []  # no RL run starts in calibration, in band or not
    assert ret["in_band"] is in_band and ret["sft_pass_at_k"]["pass@1"] == pass_at_1
    assert (ret["env"], ret["difficulty"], ret["sft_steps"]) == ("countdown", 1, 123)
    written = json.loads((tmp_path / "calibration-countdown-d1-sft123.json").read_text())
    assert json.loads(capsys.readouterr().out) == ret == written


def test_study_stops_before_rl_when_the_sft_policy_is_outside_the_band(tmp_path, monkeypatch):
    se = load_script("study_entropy")
    rl_runs = _fake_policy(se, monkeypatch, 0.05)
    with pytest.raises(SystemExit, match="pass@1 is 0.050"):
        se.main(["--out", str(tmp_path)])
    assert rl_runs == []


@pytest.mark.slow  # SFT + 2 RL runs of 3 steps + 3 evaluations: ~2 min idle on 2 cores, ~9 min at load 12
def test_quick_study_end_to_end_and_reuse(tmp_path, capsys):
    se = load_script("study_entropy")
    out = tmp_path / "study"
    ret = se.main(["--quick", "--out", str(out), "--json"])
    assert json.loads(capsys.readouterr().out) == ret
    assert set(ret["methods"]) == {"dapo", "opo"} and set(ret["sft_pass_at_k"]) == {"pass@1", "pass@4"}
    base = ret["sft_pass_at_k"]
    assert 0 <= base["pass@1"] <= base["pass@4"] <= 1  # pass@k cannot fall as k grows
    for name, row in ret["methods"].items():
        assert row["seeds"] == 1 and len(row["curves"]["entropy"][0]) == 3
        logged = [json.loads(line)["scalars"].get("update/entropy") for line in
                  (next((out).glob(f"rl-*/{name}/seed0")) / "tb" / "metrics.jsonl").read_text().splitlines()]
        assert row["curves"]["entropy"][0] == logged and all(x is not None and x > 0 for x in logged)
        fit = row["fits"][0]
        assert all(fit[k] is not None for k in ("a", "b")), fit  # three (entropy, reward) points: a fit
        assert row["pass_at_k"]["pass@1"][0] <= row["pass_at_k"]["pass@4"][0]
    table = (out / "study_entropy.md").read_text()
    assert "| SFT policy |" in table and "| dapo |" in table and "| opo |" in table
    assert json.loads((out / "progress.json").read_text())["done"] == 2
    assert (out / "study_entropy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = se.main(["--quick", "--out", str(out)])  # finished runs and evaluations are reused
    assert again["methods"] == ret["methods"] and again["seconds"] < ret["seconds"]
