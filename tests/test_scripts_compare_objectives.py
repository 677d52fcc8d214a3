"""scripts/compare_objectives.py: a tiny run (2 RL steps, 1 seed, two objectives) writes the table, the PNG
and the JSON, with one row per objective read back from the runs' metrics; a rerun reuses the runs; bad
options are refused before any training."""
import json
import math
import pathlib

import pytest
from script_module import load_script

TINY = ["--steps", "2", "--seeds", "1", "--sft-steps", "20", "--tasks", "64", "--prompts", "2", "--group-size", "2",
        "--objectives", "dapo,cispo"]


@pytest.mark.slow  # SFT + 2 RL runs of 2 steps: about a minute on an idle 2-core machine, minutes under load
def test_tiny_run_writes_table_png_and_json(tmp_path, capsys):
    co = load_script("compare_objectives")
    out = tmp_path / "cmp"
    ret = co.main([*TINY, "--out", str(out), "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == ret
    assert set(ret["objectives"]) == {"dapo", "cispo"} and ret["steps"] == 2 and ret["seeds"] == 1
    for name, row in ret["objectives"].items():
        assert row["seeds"] == 1 and len(row["final_reward_per_seed"]) == 1
        assert len(row["curves"]["reward"]) == 2
        metrics = pathlib.Path(ret["runs"][name][0]) / "tb" / "metrics.jsonl"
        scalars = [json.loads(line)["scalars"] for line in metrics.read_text().splitlines()]
        # 2 steps, one seed: each final is the mean of the run's own logged values (window min(3, steps))
        for key, tag in (("reward", "rollout/reward_mean"), ("pass_rate", "rollout/pass_rate")):
            logged = [s[tag] for s in scalars]
            assert len(logged) == 2 and math.isclose(row[f"final_{key}_mean"], sum(logged) / 2, rel_tol=1e-9), key
        assert row["curves"]["reward"] == [s["rollout/reward_mean"] for s in scalars]
        assert math.isclose(row["step_time_s"], scalars[1]["time/step_s"], rel_tol=1e-9)  # step 1 compiles: left out
    table = (out / "compare_objectives.md").read_text()
    assert "| dapo |" in table and "| cispo |" in table and "final reward" in table
    png = (out / "compare_objectives.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert json.loads((out / "compare_objectives.json").read_text()) == ret
    again = co.main([*TINY, "--out", str(out)])  # finished runs are reused, not retrained
    assert again["objectives"] == ret["objectives"] and again["seconds"] < ret["seconds"]


@pytest.mark.parametrize("argv, word", [(["--steps", "0"], "--steps"), (["--top-p", "1.5"], "--top-p"),
                                        (["--objectives", "dapo,ppo"], "--objectives"),
                                        (["--group-size", "1"], "--group-size")])
def test_bad_options_are_named(argv, word, capsys):
    co = load_script("compare_objectives")
    with pytest.raises(SystemExit):
        co.parse_args(argv)
    assert word in capsys.readouterr().err
