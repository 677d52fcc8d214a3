"""The `mix` environment: weight apportionment, tagged tasks, dispatch to members, even held-out shares."""
from __future__ import annotations

from collections import Counter

import pytest

from vagent_jax.envs import Message, get_env
from vagent_jax.envs.mixture import MEMBER_KEY, apportion

MEMBERS = [{"name": "calc", "env": "calculator", "weight": 3.0},
           {"name": "cd", "env": "countdown", "weight": 1.0, "difficulty": 2},
           {"name": "chain", "env": "reasoning_gym", "weight": 0.0,
            "args": {"dataset": "chain_sum", "config": {"min_terms": 2, "max_terms": 2}}}]


def test_apportion_hand_worked():
    assert apportion(10, [1, 1, 1]) == [4, 3, 3]  # quotas 3.33 each: the first gets the leftover
    assert apportion(16, [3, 1, 0]) == [12, 4, 0]
    assert apportion(5, [0.5, 0.3, 0.2]) == [3, 1, 1]  # quotas 2.5, 1.5, 1.0: remainders .5 .5 0 -> first two
    assert sum(apportion(7, [0.2, 0.2, 0.6])) == 7
    with pytest.raises(ValueError):
        apportion(4, [0, 0])


def test_tasks_split_by_weight_and_dispatch_to_their_member():
    env = get_env("mix", members=MEMBERS)
    tasks = env.generate_tasks(16, seed=0)
    assert Counter(t[MEMBER_KEY] for t in tasks) == {"calc": 12, "cd": 4}
    cd = next(t for t in tasks if t[MEMBER_KEY] == "cd")
    assert len(cd["numbers"]) == 4  # countdown at difficulty 2: 4 numbers
    assert env.generate_tasks(16, seed=0) == tasks  # deterministic
    for t in tasks[:4]:
        demo = env.demonstration(t)
        if demo[-2].role == "tool":  # the calculator's tool turn gets an observation from its member
            assert env.step(t, demo[:-2]).observation == demo[-2]
        assert env.step(t, demo).reward.correct
    even = env.generate_tasks(9, seed=1, even=True)
    assert Counter(t[MEMBER_KEY] for t in even) == {"calc": 3, "cd": 3, "chain": 3}


def test_a_task_without_a_member_tag_is_refused():
    env = get_env("mix", members=MEMBERS)
    with pytest.raises(ValueError, match="mix_env"):
        env.step({"expression": "1 * 2"}, [Message("user", "x"), Message("assistant", "<answer>2</answer>")])


def test_every_member_has_a_direct_demonstration_that_its_verifier_accepts():
    # sft.direct_demo_fraction on a mixture asks each member for one; Countdown once raised (no 'answer' key)
    env = get_env("mix", members=[dict(m, weight=1.0) for m in MEMBERS])
    tasks = env.generate_tasks(12, seed=1)
    assert {t[MEMBER_KEY] for t in tasks} == {"calc", "cd", "chain"}
    for t in tasks:
        direct = env.direct_demonstration(t)
        assert direct[:-1] == env.initial_messages(t) and direct[-1].role == "assistant"
        assert "<tool_call>" not in direct[-1].content and "<think>" not in direct[-1].content
        ok, _ = env.verify(t, env.final_answer(direct[-1].content))
        assert ok, (t[MEMBER_KEY], direct[-1].content)
