"""Built-in environments: deterministic generators, correct demonstrations, verifiers, multi-turn rules."""
import json

import pytest

from vagent_jax.envs.base import Message
from vagent_jax.envs.countdown import check_countdown
from vagent_jax.envs.registry import env_names, get_env, register_env

BUILTINS = ["arithmetic", "calculator", "countdown", "math_answer", "python"]


def test_registry_lists_builtins_and_rejects_unknown():
    assert set(BUILTINS) <= set(env_names())
    with pytest.raises(KeyError, match="unknown environment 'nope'"):
        get_env("nope")
    with pytest.raises(TypeError, match="calculator"):
        get_env("calculator", bogus=1)
    with pytest.raises(ValueError, match="already registered"):
        register_env("arithmetic")(lambda: None)


@pytest.mark.parametrize("name", BUILTINS)
def test_generator_deterministic_and_demonstration_verifies(name):
    env = get_env(name)
    tasks = env.generate_tasks(6, seed=3, difficulty=2)
    assert tasks == env.generate_tasks(6, seed=3, difficulty=2)
    assert tasks != env.generate_tasks(6, seed=4, difficulty=2)
    json.dumps(tasks)
    for task in tasks[: 2 if name == "python" else 6]:
        demo = env.demonstration(task)
        assert demo[-1].role == "assistant" and demo[-2].role in ("user", "tool")
        step = env.step(task, demo)
        assert step.done and step.reward.correct and step.reward.format_ok and step.reward.reward == 1.0
        # replaying the demonstration turn by turn yields exactly its tool observations
        for i, m in enumerate(demo):
            if m.role == "tool":
                assert env.step(task, demo[:i]).observation == m
    with pytest.raises(ValueError, match="difficulty"):
        env.generate_tasks(1, seed=0, difficulty=99)


def _final(env, task, text):
    return env.step(task, env.initial_messages(task) + [Message("assistant", text)])


def test_arithmetic_exact_verifier():
    env = get_env("arithmetic")
    task = {"expression": "1000 * 3 + 4", "answer": "3004"}
    assert _final(env, task, "<answer>3004</answer>").reward.correct
    assert _final(env, task, "<answer>3,004</answer>").reward.correct
    assert _final(env, task, "<answer>3004.0</answer>").reward.correct
    for wrong in ["3005", "1000*3+4", "30004", "3,0,04", ""]:
        assert not _final(env, task, f"<answer>{wrong}</answer>").reward.correct, wrong
    no_answer = _final(env, task, "3004")
    assert no_answer.done and no_answer.reward.reward == 0 and not no_answer.reward.format_ok


def test_calculator_multiturn_malformed_call_and_max_turns():
    env = get_env("calculator", max_turns=3)
    task = {"expression": "123456 * 654321", "answer": str(123456 * 654321)}
    msgs = env.initial_messages(task)
    assert "calculator" in msgs[0].content
    msgs.append(Message("assistant", "<tool_call>{bad json</tool_call>"))
    s1 = env.step(task, msgs)
    assert not s1.done and s1.observation.role == "tool" and "not valid JSON" in s1.observation.content
    msgs += [s1.observation, Message("assistant",
             '<tool_call>{"name": "calculator", "arguments": {"expression": "123456 * 654321"}}</tool_call>')]
    s2 = env.step(task, msgs)
    assert s2.tool_calls == 1 and task["answer"] in s2.observation.content
    msgs += [s2.observation, Message("assistant", f"<answer>{task['answer']}</answer>")]
    s3 = env.step(task, msgs)
    assert s3.done and s3.reward.correct and s3.reward.reward == 1.0
    assert not s3.reward.format_ok and "malformed_tool_call" in s3.reward.errors
    # three tool-calling turns with limit 3: the third ends the episode with reward 0
    call = '<tool_call>{"name": "calculator", "arguments": {"expression": "1+1"}}</tool_call>'
    m = env.initial_messages(task)
    for _ in range(2):
        m.append(Message("assistant", call))
        m.append(env.step(task, m).observation)
    m.append(Message("assistant", call))
    s = env.step(task, m)
    assert s.done and s.reward.reward == 0 and s.error == "max_turns"


def test_calculator_unknown_tool_bad_args_and_expression_errors():
    env = get_env("calculator")
    task = {"expression": "1+1", "answer": "2"}
    turn = ('<tool_call>{"name": "shell", "arguments": {"cmd": "ls"}}</tool_call>'
            '<tool_call>{"name": "calculator", "arguments": {"expr": "1"}}</tool_call>'
            '<tool_call>{"name": "calculator", "arguments": {"expression": "import os"}}</tool_call>')
    s = env.step(task, env.initial_messages(task) + [Message("assistant", turn)])
    obs = s.observation.content
    assert "unknown tool 'shell'" in obs and "missing required argument 'expression'" in obs and "error: cannot parse" in obs


def test_math_answer_modes():
    env = get_env("math_answer")
    simplest = {"question": "Compute 1/4 + 1/4.", "answer": "1/2", "mode": "simplest", "steps": ""}
    loose = dict(simplest, mode="equivalent")
    assert "simplest form" in env.prompt(simplest)
    for text, ok_simplest, ok_loose in [(r"\boxed{\frac{1}{2}}", True, True), ("<answer>2/4</answer>", False, True),
                                        (r"so \boxed{0.5}", False, True), (r"\boxed{\frac{1}{3}}", False, False)]:
        assert _final(env, simplest, text).reward.correct == ok_simplest, text
        assert _final(env, loose, text).reward.correct == ok_loose, text


def test_countdown_rules():
    nums = [25, 5, 4, 1]
    assert check_countdown("(25 - 5) * 4", nums, 80, use_all=False)[0]
    assert check_countdown("(25 - 5) * 4 = 80", nums, 80, use_all=False)[0]
    assert "unused numbers: [1]" in check_countdown("(25 - 5) * 4", nums, 80, use_all=True)[1]
    assert check_countdown("(25 - 5) * 4 * 1", nums, 80, use_all=True)[0]
    assert check_countdown("(25 - 5) * (4 + 4 - 4)", [25, 5, 4, 4, 4], 80, use_all=True)[0]
    ok, why = check_countdown("(25 - 5) * 4 * 4 / 4", nums, 80, use_all=False)
    assert not ok and "too often" in why
    assert "not available" in check_countdown("20 * 4", nums, 80, use_all=False)[1]
    assert "!=" in check_countdown("25 * 4", nums, 80, use_all=False)[1]
    assert not check_countdown("5 ** 2 * 4 - 20", [5, 2, 4, 20], 80, use_all=False)[0]
    assert not check_countdown("2.5 * 4", [25, 4], 10, use_all=False)[0]
    assert check_countdown("25 / 5 * 4", nums, 20, use_all=False)[0]


def test_step_rejects_bad_messages():
    env = get_env("arithmetic")
    with pytest.raises(ValueError, match="assistant"):
        env.step({"expression": "1", "answer": "1"}, [Message("user", "hi")])
    with pytest.raises(ValueError, match="role"):
        Message("robot", "x")
    with pytest.raises(ValueError, match="content"):
        Message.from_dict({"role": "user"})


def test_verifier_faults_end_the_episode_with_a_tag():
    import time

    class Slow(type(get_env("arithmetic"))):
        verify_timeout_s = 0.2

        def verify(self, task, answer):
            if answer == "raise":
                raise KeyError("verifier bug")
            time.sleep(5)

    env = Slow()
    task = {"expression": "1", "answer": "1"}
    slow = _final(env, task, "<answer>1</answer>")
    assert slow.done and slow.error == "timeout" and slow.reward.reward == 0
    bug = _final(env, task, "<answer>raise</answer>")
    assert bug.error == "verifier_error" and "KeyError" in bug.reward.details["detail"]
