"""Held-out tasks never share a prompt with the training tasks (nor with each other), also where the
generator has few distinct questions; a task space too small for that stops naming tasks.eval_tasks."""
from __future__ import annotations

import pytest

from vagent_jax.config import ConfigError, load_config
from vagent_jax.data.heldout import prompt_keys, task_key, unseen_tasks
from vagent_jax.data.task_source import TaskConfig, eval_tasks, make_env, training_task_sets
import vagent_jax.testing  # noqa: F401  (registers the ten_questions env)


def _cfg(tmp_path, *overrides: str) -> TaskConfig:
    return load_config(TaskConfig, None, [f"data_dir={tmp_path}", *overrides])


def _keys(cfg: TaskConfig, tasks: list[dict]) -> list:
    env = make_env(cfg)
    return [task_key(env, t) for t in tasks]


def test_calculator_held_out_prompts_are_unseen_and_distinct(tmp_path) -> None:
    # 600 of the 8100 two-digit products: a seed-drawn held-out set of 300 repeats some of them
    cfg = _cfg(tmp_path, "num_tasks=600", "eval_tasks=300")
    seen = prompt_keys(make_env(cfg), training_task_sets(cfg))
    plain = _keys(cfg, eval_tasks(_cfg(tmp_path, "num_tasks=600", "eval_tasks=300", "eval_unseen=false")))
    assert sum(k in seen for k in plain) > 0, "no overlap to remove: the test would not see the filter"
    held = _keys(cfg, eval_tasks(cfg))
    assert len(held) == 300 and len(set(held)) == 300 and not set(held) & seen
    assert list(dict.fromkeys(k for k in plain if k not in seen))[:10] == held[:10]  # same draws, minus seen


def test_unseen_draws_equal_the_plain_draws_when_nothing_collides() -> None:
    class Env:
        def prompt(self, task: dict) -> str:
            return str(task["x"])

    draw = lambda n: [{"x": 1000 + i} for i in range(n)]  # noqa: E731
    assert unseen_tasks(Env(), draw, {None: 5}, {(None, "3")}) == draw(5)
    assert unseen_tasks(Env(), lambda n: [{"x": i % 7} for i in range(n)], {None: 4}, {(None, "0")}) == \
        [{"x": 1}, {"x": 2}, {"x": 3}, {"x": 4}]


def test_mixture_members_get_equal_unseen_shares(tmp_path) -> None:
    mix = ("mix=[{env: calculator, name: easy}, {env: calculator, name: hard, difficulty: 2}]")
    cfg = _cfg(tmp_path, mix, "num_tasks=400", "eval_tasks=40")
    held = eval_tasks(cfg)
    assert sorted(t["mix_env"] for t in held) == ["easy"] * 20 + ["hard"] * 20
    seen = prompt_keys(make_env(cfg), training_task_sets(cfg))
    assert len(training_task_sets(cfg)) == 3  # the SFT set and both members' RL sets
    keys = _keys(cfg, held)
    assert len(set(keys)) == 40 and not set(keys) & seen


def test_a_task_space_too_small_stops_naming_the_key(tmp_path) -> None:
    cfg = _cfg(tmp_path, "env=ten_questions", "num_tasks=50", "eval_tasks=4")
    with pytest.raises(ConfigError, match=r"tasks\.eval_tasks.*tasks\.eval_unseen"):
        eval_tasks(cfg)
    assert len(eval_tasks(_cfg(tmp_path, "env=ten_questions", "num_tasks=50", "eval_tasks=4",
                               "eval_unseen=false"))) == 4
