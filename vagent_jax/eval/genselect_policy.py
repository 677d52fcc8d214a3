"""GenSelect with the policy as its own judge, batched over problems.

Round r of every problem is one batched `generate` call: problem j draws its permutation from its own rng,
the judge answers all problems' prompts at once, then problem j parses its reply with the same rng. Each
problem's rng sees the draws in the order `genselect.genselect` makes them (permutation, parse, ...), so a
problem's result equals `genselect(..., rng=rng_j)` with the same judge replies (tested).
Candidates are trimmed to their last tokens so the prompt fits the judge's cache.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Sequence

import numpy as np

from vagent_jax.chat_template import render_chat, stop_token_ids
from vagent_jax.config import require
from vagent_jax.engine import DecodeEngine, EngineConfig
from vagent_jax.eval.estimators import majority_vote
from vagent_jax.eval.genselect import GenSelectResult, build_genselect_prompt, parse_judgment
from vagent_jax.train.policy_dir import Policy

MIN_CANDIDATE_TOKENS = 8


@dataclasses.dataclass(frozen=True)
class GenSelectSettings:
    """GenSelect knobs: K candidates per comparison, rounds voted per problem, the judge's decode budget."""

    enabled: bool = True
    candidates: int = 4  # K (paper: 8); the prompt must hold K trimmed solutions
    rounds: int = 4
    max_new_tokens: int = 48
    temperature: float = 0.6

    def validate(self) -> None:
        """Names the key at fault."""
        require(self.candidates >= 1, "candidates", f"must be >= 1, got {self.candidates}")
        require(self.rounds >= 1, "rounds", f"must be >= 1, got {self.rounds}")
        require(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        require(self.temperature >= 0, "temperature", f"must be >= 0, got {self.temperature}")


def genselect_rounds(problems: Sequence[str], solutions: Sequence[Sequence[str]],
                     answers: Sequence[Sequence[Hashable | None]], judge_batch: Callable[[list[str]], list[str]],
                     rngs: Sequence[np.random.Generator], *, k: int, num_rounds: int,
                     fit: Callable[[str, list[str]], list[str]] | None = None) -> list[GenSelectResult]:
    """GenSelect for every problem, one batched judge call per round; fit(problem, texts) may trim the
    candidate texts so the prompt fits. Same rng order per problem as genselect.genselect."""
    m = len(problems)
    if not (len(solutions) == len(answers) == len(rngs) == m):
        raise ValueError("genselect_rounds: problems, solutions, answers and rngs need the same length")
    if k < 1 or num_rounds < 1:
        raise ValueError(f"genselect_rounds: k and num_rounds must be >= 1, got k={k}, num_rounds={num_rounds}")
    for j in range(m):
        if len(solutions[j]) == 0 or len(answers[j]) != len(solutions[j]):
            raise ValueError(f"genselect_rounds: problem {j} needs >= 1 solutions and one answer each")
    picks: list[list[int]] = [[] for _ in range(m)]
    invalid = [0] * m
    for _ in range(num_rounds):
        shown = [rngs[j].permutation(len(solutions[j]))[: min(k, len(solutions[j]))] for j in range(m)]
        prompts = []
        for j in range(m):
            texts = [solutions[j][i] for i in shown[j]]
            prompts.append(build_genselect_prompt(problems[j], fit(problems[j], texts) if fit else texts))
        replies = judge_batch(prompts)
        if len(replies) != m:
            raise ValueError(f"genselect_rounds: the judge returned {len(replies)} replies for {m} prompts")
        for j in range(m):
            idx, valid = parse_judgment(replies[j], len(shown[j]), rngs[j])
            invalid[j] += not valid
            picks[j].append(int(shown[j][idx]))
    return [GenSelectResult(majority_vote([answers[j][i] for i in picks[j]]), tuple(picks[j]), invalid[j])
            for j in range(m)]


class PolicyJudge:
    """The policy answering GenSelect prompts: each prompt is one user turn, decoded in one batch."""

    def __init__(self, policy: Policy, engine: EngineConfig, settings: GenSelectSettings, seed: int) -> None:
        self.policy = policy
        self.cfg = dataclasses.replace(engine, max_new_tokens=min(settings.max_new_tokens, engine.max_len - 2),
                                       sampling=dataclasses.replace(engine.sampling, temperature=settings.temperature))
        self.k = settings.candidates
        self.seed, self.calls = seed, 0
        self.stop_ids = stop_token_ids(policy.template, policy.tokenizer)

    def _ids(self, prompt: str) -> list[int]:
        return render_chat([{"role": "user", "content": prompt}], self.policy.tokenizer, self.policy.template, True)[0]

    def fit(self, problem: str, texts: list[str]) -> list[str]:
        """Keep each candidate's last b tokens, b = what the cache leaves after the prompt frame and the
        reply budget shared by the candidates; too small a b stops naming the keys to change."""
        frame = len(self._ids(build_genselect_prompt(problem, [""] * len(texts))))
        room = self.cfg.max_len - 1 - self.cfg.max_new_tokens - frame
        per = room // max(1, len(texts))
        if per < MIN_CANDIDATE_TOKENS:
            raise ValueError(f"genselect.candidates: {len(texts)} candidates leave {max(per, 0)} tokens each in "
                             f"engine.max_len={self.cfg.max_len} (genselect.max_new_tokens="
                             f"{self.cfg.max_new_tokens}); lower genselect.candidates or raise engine.max_len")
        tok = self.policy.tokenizer
        out = []
        for t in texts:
            ids = tok.encode(t)
            out.append(t if len(ids) <= per - 2 else "..." + tok.decode(ids[-(per - 2):]))
        return out

    def __call__(self, prompts: list[str]) -> list[str]:
        """Decode a reply to every prompt (one engine, seeded per call)."""
        self.calls += 1
        eng = DecodeEngine(self.policy.params, self.policy.model, self.cfg, self.stop_ids,
                           seed=self.seed * 7919 + self.calls)
        trajs = eng.generate([self._ids(p) for p in prompts])
        tok = self.policy.tokenizer
        return [tok.decode(t.tokens[t.gen_mask.astype(bool)].tolist(), skip_special=True) for t in trajs]
