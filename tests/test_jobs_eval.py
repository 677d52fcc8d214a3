"""`vagent eval`: exact metric values from scripted samples, the report plumbing of run_eval (scripted
rollouts and judge), GenSelect batching equal to genselect(), one real run on a tiny random policy, and
errors naming the file or key (model mismatch, malformed task file, unwritable output)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from eval_fixture import TINY_ENGINE, scripted_result
from vagent_jax.cli import main
from vagent_jax.config import from_dict, load_config
from vagent_jax.envs import get_env
from vagent_jax.eval.genselect import genselect
from vagent_jax.eval.genselect_policy import genselect_rounds
from vagent_jax.eval.sample_metrics import (DeepConfSettings, EvalSample, aggregate, bootstrap_interval,
                                            live_online_scores, pass_ks, task_scores)
from vagent_jax.jobs import eval as runner
from vagent_jax.testing import tiny_model_config, tiny_policy_dir
from vagent_jax.train.optimizer import OptimizerConfig
from vagent_jax.train.policy_dir import write_policy_meta

ROOT = Path(__file__).resolve().parents[1]
DC = DeepConfSettings(scores=("lowest_group", "mean", "tail"), etas=(25.0, 50.0), warmup=2, online_eta=50.0,
                      window=2, online_live=False)
# task A: answers 7, 7, 3 (the only correct one), unparsed; task B: four correct "5" with flat confidence
CONF_A = [[1, 1, 1, 13], [2, 2, 2, 2], [5, 5, 5, 5], [4, 0, 0, 4]]
ANS_A, OK_A = ["7", "7", "3", None], [False, False, True, False]


def _samples() -> list[list[EvalSample]]:
    a = [EvalSample(x, c, np.asarray(f, float), len(f)) for x, c, f in zip(ANS_A, OK_A, CONF_A)]
    b = [EvalSample("5", True, np.full(4, 3.0), 4) for _ in range(4)]
    return [a, b]


def test_task_scores_hand_worked() -> None:
    a = task_scores(_samples()[0], 4, DC)
    # pass@2 = 1 - C(3,2)/C(4,2) = 1/2; majority "7" (2 votes) is wrong
    assert (a["pass@1"], a["pass@2"], a["pass@4"], a["maj@4"]) == (0.25, 0.5, 1.0, 0.0)
    # window 2: C_least = [1, 2, 5, 0], mean = [4, 2, 5, 2], tail = [7, 2, 5, 2]
    # weighted votes ("7" vs "3"): lowest 3 < 5, mean 6 > 5, tail 9 > 5
    # top25% keeps one trace: s2, s2, s0; top50% keeps two: {s2,s1}, {s2,s0}, {s0,s2} -> 5>2, 5>4, 7>5
    expect = {"lowest_group": (1.0, 1.0, 1.0), "mean": (0.0, 1.0, 1.0), "tail": (0.0, 0.0, 0.0)}
    for kind, (w, t25, t50) in expect.items():
        assert (a[f"deepconf/{kind}/weighted_vote"], a[f"deepconf/{kind}/top25_vote"],
                a[f"deepconf/{kind}/top50_vote"]) == (w, t25, t50), kind
    # online: s = median of warm-up C_least [1, 2] = 1.5; s1 votes "7" (2), s2 votes "3" (5); s3's
    # windows [2, 0, 2] drop below 1.5 at the window ending on token 3: 16 - (8 + 4 + 3) = 1 token saved
    assert a["deepconf_online/accuracy"] == 1.0
    assert (a["deepconf_online/tokens_full"], a["deepconf_online/tokens_used"]) == (16.0, 15.0)
    assert a["deepconf_online/traces_stopped"] == 1.0


def test_aggregate_means_sums_and_intervals() -> None:
    per_task = [task_scores(s, 4, DC) for s in _samples()]
    metrics, ci = aggregate(per_task, num_correct=5, num_samples=8)
    assert metrics["pass@1"] == 0.625 and metrics["pass@2"] == 0.75 and metrics["maj@4"] == 0.5
    assert metrics["deepconf/mean/weighted_vote"] == 0.5 and metrics["deepconf/tail/top25_vote"] == 0.5
    assert metrics["deepconf_online/tokens_saved_fraction"] == pytest.approx(1 / 32)
    assert metrics["deepconf_online/traces_stopped"] == 1.0 and "deepconf_online/tokens_full" not in ci
    for key, (lo, hi) in ci.items():
        assert 0.0 <= lo <= hi <= 1.0, key
    assert ci["pass@1"][0] >= 0.25 and ci["pass@1"][1] <= 1.0


def test_bootstrap_and_pass_ks() -> None:
    assert bootstrap_interval([0.5, 0.5, 0.5]) == (0.5, 0.5)
    lo, hi = bootstrap_interval([0.0, 1.0] * 50)
    assert 0.35 < lo < 0.5 < hi < 0.65
    assert pass_ks(8) == [1, 2, 4, 8] and pass_ks(6) == [1, 2, 4, 6] and pass_ks(1) == [1]
    with pytest.raises(ValueError, match="per-task scores"):
        bootstrap_interval([])


def test_live_online_votes_and_tokens() -> None:
    warm = _samples()[0][:2]
    live = [EvalSample("3", True, np.full(3, 5.0), 3), EvalSample("9", False, np.array([0.0, 0.0]), 2)]
    out = live_online_scores(warm, live, [False, True], full_tokens=16, dc=DC)
    # s = 1.5: s1 ("7", 2) and the unstopped "3" (C_least 5) vote; the stopped trace does not
    assert out["deepconf_online_live/accuracy"] == 1.0
    assert (out["deepconf_online_live/tokens_used"], out["deepconf_online_live/traces_stopped"]) == (13.0, 1.0)


def test_genselect_rounds_equal_genselect_per_problem() -> None:
    sols = [["a <answer>2</answer>", "b <answer>4</answer>", "c"], ["x <answer>2</answer>", "y"]]
    answers = [["2", "4", None], ["2", None]]

    def judge(p: str) -> str:
        return "Judgment: 1" if "<answer>4</answer>" in p else "I cannot decide"

    batched = genselect_rounds(["p0", "p1"], sols, answers, lambda ps: [judge(p) for p in ps],
                               [np.random.default_rng([5, j]) for j in range(2)], k=2, num_rounds=5)
    for j in range(2):
        one = genselect(f"p{j}", sols[j], answers[j], judge, rng=np.random.default_rng([5, j]), k=2, num_rounds=5)
        assert batched[j] == one


class _ScriptedJudge:
    """Picks the candidate whose text holds the answer 3 (else 0); every problem shows all 4 candidates."""

    def __init__(self, *args: object) -> None:
        pass

    def fit(self, problem: str, texts: list[str]) -> list[str]:
        return texts

    def __call__(self, prompts: list[str]) -> list[str]:
        out = []
        for p in prompts:
            sols = re.split(r"Solution (\d+):\n", p)[1:]
            pick = next((int(i) for i, t in zip(sols[::2], sols[1::2]) if "<answer>3</answer>" in t), 0)
            out.append(f"Judgment: {pick}")
        return out


def _scripted_eval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, judge: type) -> runner.EvalConfig:
    """run_eval's sampling, policy and budget check replaced: 2 tasks x 4 scripted samples, `judge`."""
    tasks = get_env("calculator").generate_tasks(2, 1, 1)
    replies = [["<answer>7</answer>", "<answer> 7 </answer>", "<answer>3</answer>", "no answer"],
               ["<answer>5</answer>"] * 4]
    groups = [[scripted_result(tasks[j], replies[j][i], ok, conf, sample_index=i)
               for i, (ok, conf) in enumerate(zip(oks, confs))]
              for j, (oks, confs) in enumerate([(OK_A, CONF_A), ([True] * 4, [[3.0] * 4] * 4)])]
    monkeypatch.setattr(runner, "sample_rollouts", lambda policy, ts, *a, **kw: groups)
    monkeypatch.setattr(runner, "load_checked_policy", lambda *a: type("P", (), {"step": 7})())
    monkeypatch.setattr(runner, "check_eval_budgets", lambda *a: None)
    monkeypatch.setattr(runner, "PolicyJudge", judge)
    return from_dict(runner.EvalConfig, {"num_tasks": 2, "k": 4, "out": str(tmp_path / "e.json"), "genselect":
                                         {"candidates": 4, "rounds": 3},
                                         "deepconf": {k: v for k, v in vars(DC).items()}})


def test_run_eval_report_from_scripted_rollouts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = runner.run_eval(_scripted_eval(tmp_path, monkeypatch, _ScriptedJudge), "ckpt")
    assert json.loads((tmp_path / "e.json").read_text())["metrics"] == report["metrics"]
    m = report["metrics"]
    assert m["pass@1"] == 0.625 and m["maj@4"] == 0.5 and m["deepconf/mean/weighted_vote"] == 0.5
    assert m["genselect@4"] == 1.0 and m["genselect/invalid_judgment_rate"] == 0.0
    assert report["step"] == 7 and report["unparsed_answers"] == 1 and report["generated_tokens"] == 32
    table = runner.format_table(report)
    assert "pass@1 (Wilson, per sample)" in table and "maj@4" in table


class _CrashingJudge(_ScriptedJudge):
    def __call__(self, prompts: list[str]) -> list[str]:
        raise RuntimeError("judge crashed")


def test_a_failing_stage_keeps_the_scores_computed_before_it(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _scripted_eval(tmp_path, monkeypatch, _CrashingJudge)
    with pytest.raises(RuntimeError, match="judge crashed"):
        runner.run_eval(cfg, "ckpt")
    partial = json.loads((tmp_path / "e.json").read_text())
    assert partial["incomplete"] == {"stage": "genselect", "error": "RuntimeError: judge crashed"}
    assert partial["metrics"]["pass@1"] == 0.625 and partial["metrics"]["maj@4"] == 0.5
    assert "genselect@4" not in partial["metrics"] and partial["step"] == 7


@pytest.mark.slow  # ~40 s on an idle 2-core machine, mostly compiling the engine's programs
def test_shipped_eval_config_runs_on_a_demo_shaped_policy(tmp_path: Path) -> None:
    # README's `vagent eval configs/eval_calculator.yaml --checkpoint runs/demo/rl`: a policy with the demo's
    # 256-token context and a small calculator tokenizer, the config's own engine budgets (max_len 192)
    tiny_policy_dir(tmp_path / "pol", max_seq_len=256)
    out = tmp_path / "eval.json"
    rc = main(["eval", str(ROOT / "configs" / "eval_calculator.yaml"), "--checkpoint", str(tmp_path / "pol"),
               "num_tasks=2", "k=2", "deepconf.warmup=1", "engine.batch_slots=4", "env_workers=1", f"out={out}"])
    assert rc == 0
    report = json.loads(out.read_text())
    assert "incomplete" not in report and report["num_tasks"] == 2 and report["k"] == 2
    assert report["config"]["engine"]["max_len"] == 192
    assert {"pass@1", "deepconf_online_live/accuracy"} <= set(report["metrics"])


@pytest.mark.slow  # ~30 s on an idle 2-core machine, mostly compiling the engine's programs
def test_run_eval_on_a_tiny_policy(tmp_path: Path) -> None:
    tiny_policy_dir(tmp_path / "pol")
    out = tmp_path / "eval.json"
    rc = main(["eval", str(ROOT / "configs" / "eval_calculator.yaml"), "--checkpoint", str(tmp_path / "pol"),
               "num_tasks=4", "k=2", "deepconf.warmup=1", "genselect.enabled=true", "genselect.candidates=2",
               "genselect.rounds=1", "genselect.max_new_tokens=8", f"out={out}", *TINY_ENGINE])
    assert rc == 0
    report = json.loads(out.read_text())
    m = report["metrics"]
    for key in ("pass@1", "pass@2", "maj@2", "deepconf/lowest_group/top10_vote", "deepconf/tail/weighted_vote",
                "deepconf_online/accuracy", "deepconf_online/tokens_saved_fraction", "deepconf_online_live/accuracy",
                "genselect@2", "genselect/invalid_judgment_rate"):
        assert key in m and 0.0 <= m[key] <= 1.0, key
    # live traces are fresh samples: their saving is an estimate against the main pass and may be negative
    assert m["deepconf_online_live/tokens_saved_fraction"] <= 1.0
    assert m["pass@2"] >= m["pass@1"]
    assert report["ci95"]["pass@1"][0] <= m["pass@1"] <= report["ci95"]["pass@1"][1]
    assert report["num_tasks"] == 4 and report["k"] == 2 and report["step"] == 3
    assert m["deepconf_online/tokens_full"] == report["generated_tokens"]


def test_model_mismatch_names_the_file(tmp_path: Path) -> None:
    model = tiny_model_config()
    write_policy_meta(tmp_path, model, OptimizerConfig(), "chatml", tmp_path / "tokenizer")  # checked first
    wrong = {**vars(model), "rope_scaling": vars(model.rope_scaling), "d_model": 64}
    cfg = from_dict(runner.EvalConfig, {"model": wrong, "out": str(tmp_path / "e.json"), "num_tasks": 1, "k": 2,
                                        "deepconf": {"warmup": 1}, "num_devices": 1})
    with pytest.raises(ValueError, match=r"policy\.json.*d_model"):
        runner.run_eval(cfg, tmp_path)


def test_malformed_task_file_names_file_and_record(tmp_path: Path) -> None:
    bad_json, bad_rec = tmp_path / "bad.jsonl", tmp_path / "rec.jsonl"
    bad_json.write_text('{"id": "a", "expression": "1+2", "answer": "3"}\n{"id": "b", oops\n')
    bad_rec.write_text('{"id": "a", "expression": "1+2", "answer": "3"}\n{"id": "b", "question": "1+2"}\n')
    for path, pattern in ((bad_json, r"bad\.jsonl:2: bad JSON"), (bad_rec, r"rec\.jsonl: task record 2")):
        cfg = from_dict(runner.EvalConfig, {"tasks": {"source": "jsonl", "path": str(path), "eval_path": str(path)},
                                            "out": str(tmp_path / "e.json"), "k": 2, "deepconf": {"warmup": 1}})
        with pytest.raises(ValueError, match=pattern):
            runner.run_eval(cfg, tmp_path / "no_policy")


def test_unwritable_output_exits_2_naming_the_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = main(["eval", str(ROOT / "configs" / "eval_calculator.yaml"), "--checkpoint", str(tmp_path),
               f"out={blocker}/eval.json"])
    assert rc == 2
    assert f"{blocker}/eval.json" in capsys.readouterr().err


def test_config_checks_name_the_key() -> None:
    with pytest.raises(ValueError, match="deepconf.warmup"):
        from_dict(runner.EvalConfig, {"k": 4, "deepconf": {"warmup": 4}})
    with pytest.raises(ValueError, match="deepconf.scores"):
        from_dict(runner.EvalConfig, {"deepconf": {"scores": ["median"]}})
    cfg = load_config(runner.EvalConfig, ROOT / "configs" / "eval_calculator.yaml", [])
    assert cfg.k == 8 and cfg.deepconf.warmup < cfg.k and cfg.tasks.env == "calculator"
