"""scripts/compare_objectives.py: a tiny run (2 RL steps, 1 seed, two objectives) writes the table, the PNG
and the JSON, with one row per objective read back from the runs' metrics; a rerun reuses the runs; bad
options are refused before any training."""
import importlib.util
import json
import math
import pathlib
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "compare_objectives.py"
TINY = ["--steps", "2", "--seeds", "1", "--sft-steps", "20", "--tasks", "64", "--prompts", "2", "--group-size", "2",
        "--objectives", "dapo,cispo"]


def _load_script():
    """Import scripts/compare_objectives.py as module `compare_objectives` (scripts/ is not a package)."""
    if "compare_objectives" not in sys.modules:
        spec = importlib.util.spec_from_file_location("compare_objectives", SCRIPT)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["compare_objectives"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["compare_objectives"]


@pytest.mark.slow  # SFT + 2 RL runs of 2 steps: about a minute on an idle 2-core machine, minutes under load
def test_tiny_run_writes_table_png_and_json(tmp_path, capsys):
    co = _load_script()
    out = tmp_path / "cmp"
    ret = co.main([*TINY, "--out", str(out), "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == ret
    assert set(ret["objectives"]) == {"dapo", "cispo"} and ret["steps"] == 2 and ret["seeds"] == 1
    for name, row in ret["objectives"].items():
        assert row["seeds"] == 1 and len(row["final_reward_per_seed"]) == 1
        assert row["final_reward_mean"] is not None and -1.5 <= row["final_reward_mean"] <= 1.5, row
        assert 0 <= row["final_pass_rate_mean"] <= 1 and row["step_time_s"] > 0
        assert len(row["curves"]["reward"]) == 2
        metrics = pathlib.Path(ret["runs"][name][0]) / "tb" / "metrics.jsonl"
        logged = [json.loads(line)["scalars"]["rollout/reward_mean"] for line in metrics.read_text().splitlines()]
        assert math.isclose(row["final_reward_mean"], sum(logged) / len(logged), rel_tol=1e-9)
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
    co = _load_script()
    with pytest.raises(SystemExit):
        co.parse_args(argv)
    assert word in capsys.readouterr().err
