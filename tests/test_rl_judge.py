"""Judge criteria: yes/no scoring from the judge's top token, every pending criterion in one engine batch,
rewards recomputed with gates; a judge directory that does not exist is refused."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from vagent_jax.config import ConfigError, from_dict
from vagent_jax.envs import Message, Reward
from vagent_jax.rl.judge import Judge, JudgeConfig, judge_prompt, with_judge_scores, yes_no_score
from vagent_jax.sharding import MeshConfig
from vagent_jax.train.policy_dir import load_policy
from vagent_jax.train.run_common import run_mesh


def test_yes_no_score_hand_worked():
    assert yes_no_score(5, math.log(0.8), {5}, {6}) == pytest.approx(0.8)  # top token yes: P(yes)
    assert yes_no_score(6, math.log(0.7), {5}, {6}) == pytest.approx(0.3)  # top token no: 1 - P(no)
    assert yes_no_score(7, 0.0, {5}, {6}) is None
    assert "Question: Is it short?" in judge_prompt("t", "x" * 50, "Is it short?", max_chars=10)
    assert "x" * 11 not in judge_prompt("t", "x" * 50, "q", max_chars=10)


def test_with_judge_scores_recomputes_the_reward_with_gates():
    crit = [{"name": "ok", "weight": 1.0, "gate": False, "judge": ""},
            {"name": "polite", "weight": 2.0, "gate": True, "judge": "Polite?"}]
    r = Reward(1.0, True, True, (), {"rubric": {"criteria": crit, "scores": {"ok": 1.0, "polite": None},
                                                "pending": ["polite"]}})
    assert with_judge_scores(r, {"polite": 0.75}).reward == pytest.approx(2.5)  # 1 + 2 * 0.75
    low = with_judge_scores(r, {"polite": 0.2})
    assert low.reward == 0.0 and low.details["rubric"]["pending"] == [] and low.correct


@dataclasses.dataclass
class _Result:
    messages: list
    reward: Reward


def test_judge_scores_pending_criteria_in_one_batch(coin_policy_dir: Path):
    policy = load_policy(coin_policy_dir, run_mesh(MeshConfig(), 1))
    cfg = JudgeConfig(batch_slots=8, max_len=96)
    probe = Judge(cfg, policy, set(), set())
    crit = [{"name": "a", "weight": 1.0, "gate": False, "judge": "Is it right?"},
            {"name": "b", "weight": 0.5, "gate": False, "judge": "Is it short?"}]

    def result(text: str) -> _Result:
        rub = {"criteria": crit, "scores": {"a": None, "b": None}, "pending": ["a", "b"]}
        return _Result([Message("user", "Flip: H?"), Message("assistant", text)],
                       Reward(0.0, False, True, (), {"rubric": rub}))

    texts = ["<answer>H</answer>", "<answer>T</answer>", "no answer"]
    prompts = [probe._ids(judge_prompt("Flip: H?", t, c["judge"], cfg.max_response_chars)) for t in texts for c in crit]
    trajs = probe.engine.generate(prompts)  # what the greedy judge says to each prompt
    first = [(int(t.tokens[t.gen_mask.astype(bool)][0]), float(t.logprob[t.gen_mask.astype(bool)][0])) for t in trajs]
    # call the first prompt's token "yes" and the second's "no" (a random judge says something; the mapping is the test)
    yes, no = {first[0][0]}, {first[1][0]} - {first[0][0]}
    judge = Judge(cfg, policy, yes, no)
    results = judge.score([result(t) for t in texts])
    assert judge.calls == 1  # six criteria, one engine batch
    for i, r in enumerate(results):
        scores = r.reward.details["rubric"]["scores"]
        for j, c in enumerate(crit):
            tok, lp = first[2 * i + j]
            want = math.exp(lp) if tok in yes else 1 - math.exp(lp) if tok in no else 0.0
            assert scores[c["name"]] == pytest.approx(want, abs=1e-5)
        assert r.reward.reward == pytest.approx(scores["a"] + 0.5 * scores["b"], abs=1e-6)
        assert r.reward.details["rubric"]["pending"] == []
    assert judge.score([]) == [] and judge.calls == 1  # nothing pending: no engine call


def test_missing_judge_directory_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="'init_from'.*does not exist"):
        from_dict(JudgeConfig, {"init_from": str(tmp_path / "nope")})
