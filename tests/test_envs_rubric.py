"""Rubric criteria: program graders, weighted reward with gates, the rubric env in its workers, bad input."""
from __future__ import annotations

import pytest

from vagent_jax.config import ConfigError, load_config
from vagent_jax.data.task_source import TaskConfig
from vagent_jax.envs import Message, Reward, get_env
from vagent_jax.envs.rubric import build_grader, rubric_reward


def _grade(kind, args, text, outcome=None, tool_calls=0):
    msgs = [Message("user", "q"), Message("assistant", text)]
    return build_grader(kind, args)({}, msgs, outcome or Reward(1.0, True, True, (), {"answer": "7"}))


def test_program_graders():
    assert _grade("regex", {"pattern": r"<think>"}, "<think>x</think><answer>7</answer>") == 1.0
    assert _grade("regex", {"pattern": r"<think>", "must_match": False}, "<think>x</think>") == 0.0
    assert _grade("regex", {"pattern": r"^\d+$", "target": "answer"}, "whatever") == 1.0
    assert _grade("length", {"max_chars": 5}, "123456") == 0.0 and _grade("length", {"max_words": 2}, "a b") == 1.0
    call = '<tool_call>{"name": "calculator", "arguments": {"expression": "1"}}</tool_call>'
    assert _grade("tool_use", {"tool": "calculator"}, call) == 1.0
    assert _grade("tool_use", {"tool": "calculator", "max_calls": 0, "min_calls": 0}, call) == 0.0
    assert _grade("verifier", {}, "", Reward(0.0, False, True)) == 0.0
    assert _grade("verifier", {"score": True}, "", Reward(0.4, False, True)) == 0.4
    assert _grade("format", {}, "", Reward(1.0, True, False, (), {"answer": "1"})) == 0.0
    assert _grade("python", {"function": "test_envs_rubric:_two_words"}, "a b") == 1.0


def _two_words(task, messages, outcome):
    return len(messages[-1].content.split()) == 2


def test_weighted_sum_and_gates():
    crit = [{"name": "a", "weight": 2.0}, {"name": "b", "weight": 0.5}, {"name": "g", "weight": 0.0, "gate": True}]
    assert rubric_reward(crit, {"a": 1.0, "b": 0.4, "g": 1.0}) == pytest.approx(2.2)  # 2*1 + 0.5*0.4
    assert rubric_reward(crit, {"a": 1.0, "b": 1.0, "g": 0.4}) == 0.0  # the gate failed (< 0.5)


def test_rubric_env_grades_finished_episodes_and_stores_scores():
    env = get_env("rubric", env="countdown", criteria=[
        {"name": "ok", "grader": "verifier", "weight": 1.0},
        {"name": "thinks", "grader": "regex", "args": {"pattern": "<think>"}, "weight": 0.5},
        {"name": "short", "grader": "length", "args": {"max_chars": 10}, "gate": True, "weight": 0.0},
        {"name": "polite", "judge": "Is the response polite?", "weight": 1.0}])
    t = env.generate_tasks(1, 0)[0]
    msgs = env.initial_messages(t) + [Message("assistant", f"<answer>{t['solution']}</answer>")]
    r = env.step(t, msgs).reward
    scores = r.details["rubric"]["scores"]
    assert scores["ok"] == 1.0 and scores["thinks"] == 0.0 and scores["polite"] is None
    assert r.details["rubric"]["pending"] == ["polite"] and r.correct
    assert r.reward == (0.0 if len(msgs[-1].content) > 10 else 1.0)  # the gate decides
    long = env.initial_messages(t) + [Message("assistant", f"<think>{'x' * 50}</think><answer>{t['solution']}</answer>")]
    assert env.step(t, long).reward.reward == 0.0  # gate 'short' failed


def test_a_raising_grader_costs_the_trajectory():
    env = get_env("rubric", env="countdown", criteria=[{"name": "boom", "grader": "python",
                                                         "args": {"function": "test_envs_rubric:_boom"}}])
    t = env.generate_tasks(1, 0)[0]
    out = env.step(t, env.initial_messages(t) + [Message("assistant", "<answer>1</answer>")])
    assert out.error == "verifier_error" and out.reward.reward == 0.0


def _boom(task, messages, outcome):
    raise RuntimeError("grader bug")


@pytest.mark.parametrize("override, key", [
    ("rubric=[{name: a}]", "rubric[0].grader"),
    ("rubric=[{name: a, grader: regex}]", "rubric[0].args"),
    ("rubric=[{name: a, grader: nope}]", "rubric[0].grader"),
    ("rubric=[{name: a, grader: format, weight: 0}]", "rubric"),
    ("mix=[{env: calculator, rubric: [{name: x, judge: ''}]}]", "mix[0].rubric[0].grader"),
    ("mix=[{env: calculator, weight: -1}]", "mix[0].weight"),
    ("mix=[{env: calculator, weight: 0}, {env: countdown, weight: 0}]", "mix"),
    ("mix=[{env: calculator}, {env: calculator}]", "mix[1].name"),
    ("mix=[{env: reasoning_gym, config: {dataset: chian_sum}}]", "mix[0].config.dataset"),
])
def test_bad_rubric_and_mix_input_names_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(TaskConfig, None, [override])
    assert f"'{key}'" in str(e.value)
