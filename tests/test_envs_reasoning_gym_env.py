"""reasoning-gym environments: tasks, verifier, seeds, difficulty knobs, faults in the workers, bad input."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vagent_jax.config import ConfigError, load_config
from vagent_jax.data.task_source import TaskConfig
from vagent_jax.envs import EnvWorkerPool, Message, get_env
from vagent_jax.envs.reasoning_gym_env import curriculum_knobs

CHAIN = {"dataset": "chain_sum", "config": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}}


def _answer(env, task, text):
    return env.step(task, env.initial_messages(task) + [Message("assistant", text)])


def test_prompt_answer_and_score_answer_reward():
    env = get_env("reasoning_gym", **CHAIN)
    tasks = env.generate_tasks(6, seed=3)
    assert len(tasks) == 6 and all(t["dataset"] == "chain_sum" for t in tasks)
    t = tasks[0]
    assert env.initial_messages(t)[-1].content == t["question"]
    ok = _answer(env, t, f"<think>adding</think><answer>{t['answer']}</answer>").reward
    assert ok.correct and ok.reward == 1.0
    wrong = _answer(env, t, f"<answer>{int(t['answer']) + 1}</answer>").reward
    assert not wrong.correct and wrong.reward == 0.0
    assert _answer(env, t, t["answer"]).reward.errors == ("no_answer",)  # no <answer> block: not extracted


def test_partial_credit_is_the_reward_and_threshold_sets_correct():
    # word_sorting's score_answer gives partial credit; with pass_threshold 0.5 a near answer counts as correct
    env = get_env("reasoning_gym", dataset="letter_jumble", pass_threshold=0.5)
    t = env.generate_tasks(1, seed=0)[0]
    words = t["answer"].split()
    if len(words) < 2:
        pytest.skip("need a multi-word task")
    near = " ".join(words[:-1] + ["zzzz"])
    r = _answer(env, t, f"<answer>{near}</answer>").reward
    assert 0.0 < r.reward < 1.0 and r.correct == (r.reward >= 0.5)


def test_composite_draws_by_weight_and_scores_each_dataset():
    env = get_env("reasoning_gym", composite=[{"dataset": "chain_sum", "weight": 3.0},
                                              {"dataset": "word_sequence_reversal", "weight": 1.0}])
    tasks = env.generate_tasks(200, seed=1)
    n_chain = sum(t["dataset"] == "chain_sum" for t in tasks)
    assert 120 < n_chain < 180  # 3:1 of 200 = 150 expected (binomial sd ~6)
    for t in (tasks[0], next(t for t in tasks if t["dataset"] == "word_sequence_reversal")):
        assert _answer(env, t, f"<answer>{t['answer']}</answer>").reward.correct


def test_same_tasks_in_another_process_with_another_hash_seed():
    env = get_env("reasoning_gym", **CHAIN)
    here = env.generate_tasks(5, seed=11, difficulty=1)
    code = ("import json; from vagent_jax.envs import get_env; "
            f"print(json.dumps(get_env('reasoning_gym', **{CHAIN!r}).generate_tasks(5, seed=11, difficulty=1)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONHASHSEED="12345"))
    import json
    assert json.loads(out.stdout.strip().splitlines()[-1]) == here
    assert env.generate_tasks(5, seed=12) != here


def test_difficulty_maps_to_the_dataset_curriculum_knobs():
    assert curriculum_knobs("chain_sum", 1)["max_terms"] < curriculum_knobs("chain_sum", 3)["max_terms"]
    env = get_env("reasoning_gym", dataset="chain_sum")
    easy, hard = env.generate_tasks(20, 0, difficulty=1), env.generate_tasks(20, 0, difficulty=4)
    terms = lambda ts: max(t["question"].count("+") + t["question"].count("-") for t in ts)  # noqa: E731
    assert terms(easy) < terms(hard)
    with pytest.raises(ValueError, match="difficulty must be in"):
        env.generate_tasks(1, 0, difficulty=99)


def test_explicit_levels_override_config():
    env = get_env("reasoning_gym", dataset="chain_sum", config={"min_digits": 1, "max_digits": 1},
                  levels=[{"min_terms": 2, "max_terms": 2}, {"min_terms": 5, "max_terms": 5}])
    q1 = env.generate_tasks(5, 0, difficulty=1)[0]["question"]
    q2 = env.generate_tasks(5, 0, difficulty=2)[0]["question"]
    ops = lambda q: q.count("+") + q.count(" - ")  # noqa: E731
    assert ops(q1) == 1 and ops(q2) == 4


def test_raising_and_slow_scorers_cost_one_trajectory_in_the_workers():
    sys.path.insert(0, str(Path(__file__).parent))
    import rg_fixture_datasets  # noqa: F401  (registers the fixture datasets here too)

    mods = ["rg_fixture_datasets"]
    with EnvWorkerPool(1, env_modules=mods, deadline_margin_s=30.0) as pool:
        for rid, (ds, kw) in enumerate([("vagent_raising", {}), ("vagent_sleepy", {"verify_timeout_s": 0.5}),
                                         ("chain_sum", {})]):
            env = get_env("reasoning_gym", dataset=ds, **kw)
            t = env.generate_tasks(1, 0)[0]
            msgs = [m.to_dict() for m in env.initial_messages(t)] + [{"role": "assistant",
                                                                      "content": f"<answer>{t['answer']}</answer>"}]
            pool.submit(rid, "reasoning_gym", dict(dataset=ds, **kw), t, msgs)
        got = {}
        while len(got) < 3:
            got.update(dict(pool.poll(timeout=60)))
    assert got[0].error == "verifier_error" and "scorer bug" in got[0].reward.details["detail"]
    assert got[1].error == "timeout" and got[1].reward.reward == 0.0
    assert got[2].reward.correct  # the worker goes on serving after both faults


@pytest.mark.parametrize("args, key, words", [
    ({"dataset": "chain_sm"}, "env_args.dataset", ["chain_sum"]),
    ({"dataset": "chain_sum", "config": {"max_termz": 3}}, "env_args.config.max_termz", ["max_terms"]),
    ({"composite": [{"dataset": "chain_sum", "weight": 0}]}, "env_args.composite[0].weight", ["> 0"]),
    ({"dataset": "chain_sum", "config": {"min_terms": 5, "max_terms": 2}}, "env_args.config", ["max_terms"]),
])
def test_bad_input_names_the_key(args, key, words):
    with pytest.raises(ConfigError) as e:
        load_config(TaskConfig, None, ["env=reasoning_gym", f"env_args={args!r}".replace("'", '"')])
    assert f"'{key}'" in str(e.value)
    for w in words:
        assert w in str(e.value)
