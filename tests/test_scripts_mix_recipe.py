"""scripts/mix_recipe.py: the recipe config loads and validates, the report table, an end-to-end tiny run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from script_module import load_script
from vagent_jax.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_recipe_config_loads_with_four_members_and_a_rubric():
    mr = load_script("mix_recipe")
    cfg = load_config(mr.MixRecipeConfig, ROOT / "configs" / "mix_recipe.yaml")
    assert [e.tag for e in cfg.tasks.mix] == ["calculator", "countdown", "number_sorting", "letter_counting"]
    assert [e.tag for e in cfg.tasks.mix if e.rubric] == ["letter_counting"] and cfg.tasks.eval_unseen
    sft, rl, ev = mr.stages(cfg)
    assert rl.init_from.endswith("sft") and ev.tasks == rl.tasks == sft.tasks
    with pytest.raises(ConfigError, match="'tasks.mix'"):
        load_config(mr.MixRecipeConfig, None, [])


def test_report_table():
    mr = load_script("mix_recipe")
    s = {"sft_steps": 6, "rl_steps": 2, "eval_tasks_per_env": 2, "overall": {"sft": 0.25, "rl": 0.5},
         "pass_at_1": {"a": {"sft": 0.5, "sft_ci95": [0.1, 0.9], "rl": 1.0, "rl_ci95": [0.3, 1.0]}},
         "weights": {"a": [(1, 1.0), (2, 0.5)], "b": [(1, 0.0), (2, 0.5)]}, "heldout_seen_in_training": {"a": 0.25}}
    text = mr.format_report(s)
    assert "| a | 50.0 [10.0, 90.0] | 100.0 [30.0, 100.0] | +50.0 | 25% |" in text
    assert "| 2 | 0.500 | 0.500 |" in text and "| all | 25.0 | 50.0 | +25.0 | |" in text


def test_a_held_out_split_that_cannot_be_drawn_stops_before_sft(tmp_path: Path, monkeypatch):
    mr = load_script("mix_recipe")
    monkeypatch.setattr(mr, "run_sft", lambda cfg: pytest.fail("SFT ran before the held-out split was checked"))
    tiny = ("tasks.mix=[{env: calculator, name: calc}, {env: reasoning_gym, name: bits, "
            "config: {dataset: count_bits, config: {min_n: 1, max_n: 3}}}]")
    with pytest.raises(ConfigError, match=r"tasks\.eval_tasks.*bits"):
        mr.main([tiny, "tasks.eval_unseen=true", f"out_dir={tmp_path / 'mix'}", f"tasks.data_dir={tmp_path / 'data'}",
                 "tasks.num_tasks=64", "tasks.eval_tasks=10"])


def test_heldout_seen_is_high_for_a_dataset_of_few_questions_and_low_for_many(tmp_path: Path):
    mr = load_script("mix_recipe")
    tasks = load_config(mr.TaskConfig, None, [
        "mix=[{env: calculator, name: calc}, {env: reasoning_gym, name: bits, "
        "config: {dataset: count_bits, config: {min_n: 1, max_n: 3}}}]",
        "num_tasks=200", "eval_tasks=20", "eval_unseen=false", f"data_dir={tmp_path}"])
    seen = mr.heldout_seen(tasks)
    assert seen["bits"] == 1.0  # 3 distinct questions, all among 100 training tasks
    assert seen["calc"] < 0.5


@pytest.mark.slow
def test_tiny_end_to_end_run(tmp_path: Path):
    mr = load_script("mix_recipe")
    assert mr.main([f"out_dir={tmp_path / 'mix'}", f"tasks.data_dir={tmp_path / 'data'}", "tasks.num_tasks=64",
                    "tasks.eval_tasks=10", "sft.steps=6", "sft.optimizer.total_steps=6", "sft.save_every=6",
                    "sft.model.n_layers=1", "rl.steps=2", "rl.prompts_per_step=4", "rl.group_size=2",
                    "rl.engine.batch_slots=16", "eval.engine.batch_slots=16", "--json"]) == 0
    s = json.loads((tmp_path / "mix" / "mix_summary.json").read_text())
    assert set(s["pass_at_1"]) == {"calculator", "countdown", "number_sorting", "letter_counting"}
    assert [st for st, _ in s["weights"]["calculator"]] == [1, 2]
