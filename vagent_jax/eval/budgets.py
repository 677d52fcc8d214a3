"""Token budgets of a `vagent eval` run, checked on the loaded policy before anything compiles: every
held-out prompt with its reply budget fits engine.max_len, and every GenSelect comparison prompt (frame,
trimmed candidates, judge reply) fits it too. A budget that cannot hold stops naming the key to change,
instead of after minutes of sampling."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from vagent_jax.chat_template import render_chat
from vagent_jax.engine import EngineConfig
from vagent_jax.envs import Environment
from vagent_jax.eval.genselect_policy import GenSelectSettings, PolicyJudge
from vagent_jax.train.policy_dir import Policy


def problem_text(env: Environment, task: Mapping[str, Any]) -> str:
    """The user turn of a task's first prompt: the problem GenSelect shows the judge."""
    return next(m.content for m in env.initial_messages(task) if m.role == "user")


def check_prompt_budget(policy: Policy, env: Environment, tasks: Sequence[Mapping[str, Any]],
                        engine: EngineConfig) -> None:
    """The longest first prompt plus engine.max_new_tokens must fit the cache (engine.max_len)."""
    longest, where = 0, 0
    for i, task in enumerate(tasks):
        msgs = [m.to_dict() for m in env.initial_messages(task)]
        n = len(render_chat(msgs, policy.tokenizer, policy.template, True)[0])
        if n > longest:
            longest, where = n, i
    if longest + engine.max_new_tokens > engine.max_len - 1:
        raise ValueError(f"engine.max_len: task {where + 1}'s prompt takes {longest} tokens; with "
                         f"engine.max_new_tokens={engine.max_new_tokens} it needs engine.max_len >= "
                         f"{longest + engine.max_new_tokens + 1}, got {engine.max_len}")


def check_genselect_budget(policy: Policy, env: Environment, tasks: Sequence[Mapping[str, Any]],
                           engine: EngineConfig, settings: GenSelectSettings, k: int) -> None:
    """Every task's comparison prompt leaves each of its min(candidates, k) candidates the minimum share of
    engine.max_len (the judge's own fit rule, applied to empty candidates)."""
    judge = PolicyJudge(policy, engine, settings, seed=0)
    shown = min(settings.candidates, k)
    for task in tasks:
        judge.fit(problem_text(env, task), [""] * shown)


def check_eval_budgets(policy: Policy, env: Environment, tasks: Sequence[Mapping[str, Any]],
                       engine: EngineConfig, genselect: GenSelectSettings, k: int) -> None:
    """All budgets of one eval run (prompts, then GenSelect when enabled); the first that fails raises."""
    check_prompt_budget(policy, env, tasks, engine)
    if genselect.enabled:
        check_genselect_budget(policy, env, tasks, engine, genselect, k)
