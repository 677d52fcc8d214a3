"""scripts/demo_seeds.py: one row per seed from each demo's summary, the bar per seed, mean/min/max, a
finished seed is read back and not rerun, other settings in the same OUT are refused, bad options named.
The slow test runs a reduced demo (the real recipe, fewer eval tasks and RL steps) on two seeds and asks
that both learn: what `make test-all` checks of the recipe's robustness."""
from __future__ import annotations

import json

import pytest
from script_module import load_script


def _fake_summary(seed: int) -> dict:
    sft, rl = 0.2 + 0.1 * seed, 0.5 + 0.05 * seed
    return {"sft_steps": 200 + 50 * seed, "sft_stopped_early": True, "sft_pass_rate": sft,
            "sft_pass_rate_95ci": [sft - 0.04, sft + 0.04], "rl_pass_rate": rl,
            "rl_pass_rate_95ci": [rl - 0.04, rl + 0.04], "rl_lift_points": 100 * (rl - sft), "eval_tasks": 500,
            "total_seconds": 600.0 + seed}


def test_table_rows_bar_and_reuse(tmp_path, monkeypatch, capsys) -> None:
    ds = load_script("demo_seeds")
    ran = []

    def fake_run_demo(cfg, resume):
        assert resume and cfg.tasks.eval_tasks == 50
        ran.append(cfg.seed)
        s = _fake_summary(cfg.seed)
        (tmp_path / "o" / f"seed{cfg.seed}" / "summary.json").write_text(json.dumps(s))
        return s

    monkeypatch.setattr(ds, "run_demo", fake_run_demo)
    argv = ["--seeds", "0,1,2", "--out", str(tmp_path / "o"), "--json", "tasks.eval_tasks=50"]
    res = ds.main(argv)
    assert json.loads(capsys.readouterr().out) == res and ran == [0, 1, 2]
    # seed 0: SFT 20% < 30% fails the bar; seed 1: 30% and +25 passes; seed 2: 40%, lift +20 passes
    assert [r["meets_bar"] for r in res["rows"]] == [False, True, True] and res["meets_bar"] == 2
    assert res["rows"][1]["sft_steps"] == 250 and abs(res["rows"][2]["lift_points"] - 20.0) < 1e-9
    assert abs(res["stats"]["lift_points"]["min"] - 20.0) < 1e-9 and res["stats"]["lift_points"]["max"] == 30.0
    md = (tmp_path / "o" / "demo_seeds.md").read_text()
    assert "| 1 | 250 | 30.0 [26.0, 34.0] | 55.0 [51.0, 59.0] | +25.0 | 10.0 | yes |" in md
    assert "2 of 3 seeds meet the bar" in md and "| min |" in md
    ds.main(argv)  # finished seeds are read back, not rerun
    assert ran == [0, 1, 2]
    with pytest.raises(SystemExit) as e:  # the same OUT with other overrides is refused, not mixed
        ds.main(["--seeds", "0", "--out", str(tmp_path / "o"), "tasks.eval_tasks=60"])
    assert "other settings" in str(e.value)


@pytest.mark.parametrize("argv, word", [(["--seeds", "a,b"], "--seeds"), (["--seeds", "1,1"], "--seeds"),
                                        (["seed=3"], "seed"), (["--bogus"], "--bogus")])
def test_bad_options_are_named(argv, word, capsys) -> None:
    ds = load_script("demo_seeds")
    with pytest.raises(SystemExit):
        ds.parse_args(argv)
    assert word in capsys.readouterr().err


@pytest.mark.slow  # two reduced demos with the real SFT recipe: ~20 minutes on an idle 2-core machine
def test_reduced_demo_learns_on_two_seeds(tmp_path) -> None:
    ds = load_script("demo_seeds")
    res = ds.main(["--seeds", "0,1", "--out", str(tmp_path / "o"), "tasks.eval_tasks=100", "rl.steps=10",
                   f"tasks.data_dir={tmp_path / 'data'}", "--min-lift", "0"])
    for row in res["rows"]:  # the bar: SFT learned the task on both seeds, and DAPO did not undo it
        assert row["sft_pass_rate"] >= 0.3, row
        assert row["rl_pass_rate"] >= row["sft_pass_rate"] - 0.05, row
