"""Judge criteria of a rubric, scored by a judge model served by the project's decode engine (config `judge`).

For every finished trajectory with pending judge criteria (envs/rubric_env.py), each criterion becomes one
prompt: the task, the response, the criterion's yes/no question. All prompts of a batch of rollouts go
through one DecodeEngine together (greedy, one new token). Score = P(yes) under the judge (T = 1) when its
top token is a "yes" token, 1 - P(no) when it is a "no" token (both equal P(yes) when yes and no hold all
the mass), 0 otherwise (counted as `invalid`). The engine returns the log-probability of the token it
picks, not the whole distribution, which is why the score is read from the top token.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Sequence

from vagent_jax.chat_template import render_chat, stop_token_ids
from vagent_jax.config import require
from vagent_jax.envs.rubric import rubric_reward
from vagent_jax.engine import DecodeEngine, EngineConfig, SamplingConfig

YES_WORDS, NO_WORDS = ("yes", "Yes", "YES", " yes", " Yes"), ("no", "No", "NO", " no", " No")


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
    """The judge model (a policy run directory or an HF directory) and its engine's shape."""

    init_from: str = ""
    batch_slots: int = 32
    max_len: int = 512
    max_response_chars: int = 2000  # the tail of a long response is what the judge reads

    def validate(self) -> None:
        """A judge directory, when given, must exist; shapes positive."""
        require(not self.init_from or Path(self.init_from).is_dir(), "init_from",
                f"judge directory {self.init_from!r} does not exist")
        require(self.batch_slots >= 1, "batch_slots", f"must be >= 1, got {self.batch_slots}")
        require(self.max_len >= 16, "max_len", f"must be >= 16, got {self.max_len}")
        require(self.max_response_chars >= 1, "max_response_chars", f"must be >= 1, got {self.max_response_chars}")


def judge_prompt(task_text: str, response: str, question: str, max_chars: int) -> str:
    """The user turn put to the judge for one criterion."""
    tail = response if len(response) <= max_chars else "..." + response[-max_chars:]
    return (f"Task:\n{task_text}\n\nResponse:\n{tail}\n\nQuestion: {question}\n"
            "Answer with one word: yes or no.")


def yes_no_score(token: int, logprob: float, yes_ids: set[int], no_ids: set[int]) -> float | None:
    """The criterion's score from the judge's top token (module docstring); None: neither yes nor no."""
    if token in yes_ids:
        return math.exp(logprob)
    if token in no_ids:
        return 1.0 - math.exp(logprob)
    return None


def single_token_ids(tokenizer: Any, words: Sequence[str]) -> set[int]:
    """Ids of the words that the tokenizer encodes as one token."""
    out = set()
    for w in words:
        ids = tokenizer.encode(w)
        if len(ids) == 1:
            out.add(int(ids[0]))
    return out


class Judge:
    """A judge model and its engine; `score(results)` fills every pending judge criterion in one batch."""

    def __init__(self, cfg: JudgeConfig, policy: Any, yes_ids: set[int], no_ids: set[int]) -> None:
        self.cfg, self.policy, self.yes, self.no = cfg, policy, set(yes_ids), set(no_ids)
        eng = EngineConfig(batch_slots=cfg.batch_slots, max_len=min(cfg.max_len, policy.model.max_seq_len),
                           max_new_tokens=1, chunk_steps=1, sampling=SamplingConfig(temperature=0.0))
        self.engine = DecodeEngine(policy.params, policy.model, eng, stop_token_ids(policy.template, policy.tokenizer))
        self.invalid = 0  # judgments whose top token was neither yes nor no
        self.calls = 0  # engine batches run

    @classmethod
    def load(cls, cfg: JudgeConfig, mesh: Any) -> "Judge":
        """The judge of judge.init_from (a run or HF directory); its tokenizer must have one-token yes/no."""
        from vagent_jax.train.policy_dir import load_policy

        policy = load_policy(cfg.init_from, mesh)
        yes, no = single_token_ids(policy.tokenizer, YES_WORDS), single_token_ids(policy.tokenizer, NO_WORDS)
        require(bool(yes) and bool(no) and not yes & no, "judge.init_from",
                f"the judge's tokenizer has no single-token 'yes' and 'no' ({cfg.init_from})")
        return cls(cfg, policy, yes, no)

    def _ids(self, prompt: str) -> list[int]:
        ids = render_chat([{"role": "user", "content": prompt}], self.policy.tokenizer, self.policy.template, True)[0]
        room = self.engine.cfg.max_len - 2
        return ids if len(ids) <= room else ids[-room:]

    def score(self, results: Sequence[Any]) -> Sequence[Any]:
        """Score the pending judge criteria of `results` in one batch; rewards recomputed in place."""
        jobs = []  # (result index, criterion name, prompt ids)
        for i, r in enumerate(results):
            rub = r.reward.details.get("rubric") if isinstance(r.reward.details, dict) else None
            if not rub or not rub.get("pending"):
                continue
            task_text = next((m.content for m in r.messages if m.role == "user"), "")
            response = "\n".join(m.content for m in r.messages if m.role == "assistant")
            questions = {c["name"]: c["judge"] for c in rub["criteria"]}
            for name in rub["pending"]:
                prompt = judge_prompt(task_text, response, questions[name], self.cfg.max_response_chars)
                jobs.append((i, name, self._ids(prompt)))
        if not jobs:
            return results
        self.calls += 1
        self.engine.reset(seed=self.calls)
        trajs = self.engine.generate([ids for _, _, ids in jobs])
        filled: dict[int, dict[str, float]] = {}
        for (i, name, _), t in zip(jobs, trajs):
            gen = t.gen_mask.astype(bool)
            tok, lp = int(t.tokens[gen][0]), float(t.logprob[gen][0])
            s = yes_no_score(tok, lp, self.yes, self.no)
            self.invalid += s is None
            filled.setdefault(i, {})[name] = 0.0 if s is None else s
        for i, scores in filled.items():
            results[i].reward = with_judge_scores(results[i].reward, scores)
        return results


def with_judge_scores(reward: Any, scores: dict[str, float]) -> Any:
    """The reward with the judge's scores stored and the rubric's reward recomputed."""
    rub = dict(reward.details["rubric"])
    full = dict(rub["scores"], **scores)
    rub.update(scores=full, pending=[n for n in rub["pending"] if n not in scores])
    value = rubric_reward(rub["criteria"], {k: (v if v is not None else 0.0) for k, v in full.items()})
    return dataclasses.replace(reward, reward=value, details=dict(reward.details, rubric=rub))


def needs_judge(tasks: Any) -> bool:
    """True when a criterion of tasks.rubric or of a tasks.mix entry's rubric is a judge question."""
    criteria = list(tasks.rubric) + [c for e in tasks.mix for c in e.rubric]
    return any(c.judge for c in criteria)
