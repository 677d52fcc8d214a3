"""An environment graded by a rubric (`rubric`): the inner environment runs the episode, then, in the same
worker, every program criterion scores the finished trajectory and the reward becomes the rubric's
(envs/rubric.py). The verifier's verdict stays `correct` (pass rate, dynamic sampling). Judge criteria
are left pending in details["rubric"] and scored on the trainer side, batched (vagent_jax/rl/judge.py).

details["rubric"] = {"criteria": [{name, weight, gate, judge}], "scores": {name: float | None},
"pending": [names awaiting the judge]}. A grader that raises costs the trajectory (verifier_error).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from vagent_jax.config import ConfigError, from_dict
from vagent_jax.envs.base import EnvStep, Environment, Message, Reward, as_messages, failed_step
from vagent_jax.envs.registry import get_env, register_env
from vagent_jax.envs.rubric import CriterionConfig, build_grader, check_rubric, clamp_score, rubric_reward


def parse_criteria(criteria: Sequence[Mapping[str, Any]]) -> list[CriterionConfig]:
    """CriterionConfigs from plain mappings, each validated (errors name `criteria[i].key`)."""
    out = []
    for i, c in enumerate(criteria):
        out.append(c if isinstance(c, CriterionConfig) else from_dict(CriterionConfig, dict(c), prefix=f"criteria[{i}]"))
    check_rubric(out)
    return out


@register_env("rubric")
class RubricEnv(Environment):
    """The inner environment `env` (built with `args`), rewarded by `criteria`."""

    name = "rubric"

    def __init__(self, env: str, criteria: Sequence[Mapping[str, Any]], args: Mapping[str, Any] | None = None) -> None:
        self.inner = get_env(env, **dict(args or {}))
        self.criteria = parse_criteria(criteria)
        if not self.criteria:
            raise ConfigError.at("criteria", "a rubric needs at least one criterion")
        self.graders = {c.name: build_grader(c.grader, c.args) for c in self.criteria if c.grader}
        self.max_turns, self.verify_timeout_s = self.inner.max_turns, self.inner.verify_timeout_s
        super().__init__()
        self.tools = self.inner.tools

    def initial_messages(self, task: Mapping[str, Any]) -> list[Message]:
        return self.inner.initial_messages(task)

    def prompt(self, task: Mapping[str, Any]) -> str:
        return self.inner.prompt(task)

    def verify(self, task: Mapping[str, Any], answer: str) -> tuple[bool, dict]:
        return self.inner.verify(task, answer)

    def generate_tasks(self, n: int, seed: int, difficulty: int = 1) -> list[dict]:
        return self.inner.generate_tasks(n, seed, difficulty)

    def demonstration(self, task: Mapping[str, Any]) -> list[Message]:
        return self.inner.demonstration(task)

    def direct_demonstration(self, task: Mapping[str, Any]) -> list[Message]:
        return self.inner.direct_demonstration(task)

    def step_budget_s(self, messages: Sequence[Message | Mapping[str, Any]]) -> float:
        return self.inner.step_budget_s(messages)

    def final_answer(self, text: str) -> str | None:
        return self.inner.final_answer(text)

    def step(self, task: Mapping[str, Any], messages: Sequence[Message | Mapping[str, Any]]) -> EnvStep:
        """The inner step; a finished, fault-free episode is then graded by the rubric."""
        msgs = as_messages(messages)
        out = self.inner.step(task, msgs)
        if not out.done or out.reward is None or out.error is not None:
            return out
        try:
            scores = {n: clamp_score(g(task, msgs, out.reward), n) for n, g in self.graders.items()}
        except Exception as e:  # a grader bug costs this trajectory only
            return failed_step("verifier_error", f"rubric grader: {type(e).__name__}: {e}", out.tool_calls)
        pending = [c.name for c in self.criteria if c.judge]
        return dataclasses.replace(out, reward=graded_reward(out.reward, self.criteria, scores, pending))


def graded_reward(outcome: Reward, criteria: Sequence[CriterionConfig], scores: Mapping[str, float],
                  pending: Sequence[str]) -> Reward:
    """The outcome with the rubric's reward (pending judge criteria count 0 until scored) and details."""
    spec = [{"name": c.name, "weight": c.weight, "gate": c.gate, "judge": c.judge} for c in criteria]
    full = {c.name: scores.get(c.name) for c in criteria}
    value = rubric_reward(spec, {k: (v if v is not None else 0.0) for k, v in full.items()})
    details = dict(outcome.details, env_reward=outcome.reward,
                   rubric={"criteria": spec, "scores": full, "pending": list(pending)})
    return dataclasses.replace(outcome, reward=value, details=details)
