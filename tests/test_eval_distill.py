"""`vagent distill`: which trajectories pass into the SFT file, strict pass-rate filtering, outputs that
`vagent sft` (demos: jsonl) and the JSONL task source read back, one real run on a tiny random policy,
and errors naming the key or file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval_fixture import TINY_ENGINE, scripted_result
from vagent_jax.cli import main
from vagent_jax.config import from_dict
from vagent_jax.data.task_source import TaskConfig, train_tasks
from vagent_jax.envs import get_env
from vagent_jax.eval.distill import filter_by_pass_rate, passing_conversations, with_ids
from vagent_jax.eval.policy_rollouts import check_tasks
from vagent_jax.jobs import distill
from vagent_jax.jobs.distill import DistillConfig, distill_from_results
from vagent_jax.jobs.sft import SFTConfig, demo_conversations
from vagent_jax.testing import tiny_policy_dir

ROOT = Path(__file__).resolve().parents[1]
TASKS = get_env("calculator").generate_tasks(3, 4, 1)


def _groups() -> list[list]:
    """Task 0: 1 of 4 correct (+ a correct but truncated one, a correct one with a malformed tool call and a
    duplicate); task 1: all correct (identical chats); task 2: none correct."""
    t0, t1, t2 = TASKS
    a0 = f"<answer>{t0['answer']}</answer>"
    g0 = [scripted_result(t0, a0, True, [1.0], sample_index=0),
          scripted_result(t0, a0, True, [1.0], sample_index=1),  # same chat as sample 0
          scripted_result(t0, "cut", False, [1.0], sample_index=2, truncated=True),
          scripted_result(t0, a0 + " <tool_call>{bad", True, [1.0], sample_index=3, format_ok=False)]
    g1 = [scripted_result(t1, f"<answer>{t1['answer']}</answer>", True, [1.0], sample_index=i) for i in range(4)]
    g2 = [scripted_result(t2, "<answer>0.5</answer>", False, [1.0], sample_index=i) for i in range(4)]
    return [g0, g1, g2]


def test_passing_conversations_rules() -> None:
    g0 = _groups()[0]
    assert len(passing_conversations(g0)) == 1  # duplicate dropped, malformed tool call dropped
    assert len(passing_conversations(g0, dedupe=False)) == 2
    assert len(passing_conversations(g0, require_format_ok=False, dedupe=False)) == 3
    assert len(passing_conversations(g0, require_format_ok=False, dedupe=False, max_per_task=2)) == 2
    cut = scripted_result(TASKS[0], "<answer>1</answer>", True, [1.0], truncated=True)
    err = scripted_result(TASKS[0], "<answer>1</answer>", True, [1.0], error="timeout")
    assert passing_conversations([cut, err]) == []
    chat = passing_conversations(g0)[0]
    assert chat[-1] == {"role": "assistant", "content": f"<answer>{TASKS[0]['answer']}</answer>"}
    assert [m["role"] for m in chat[:-1]] == ["system", "user"]


def test_filter_by_pass_rate_is_strict_and_ids_are_added() -> None:
    tasks = [{"expression": str(i)} for i in range(5)]
    kept = filter_by_pass_rate(tasks, [0.0, 0.25, 0.5, 1.0, 0.75], 0.0, 1.0)
    assert [t["expression"] for t in kept] == ["1", "2", "4"]
    assert [t["measured_pass_rate"] for t in kept] == [0.25, 0.5, 0.75]
    assert [t["expression"] for t in filter_by_pass_rate(tasks, [0.0, 0.25, 0.5, 1.0, 0.75], 0.25, 0.75)] == ["2"]
    ided = with_ids([{"id": "x"}, {"a": 1}], "calc")
    assert [t["id"] for t in ided] == ["x", "calc-1"]
    with pytest.raises(ValueError, match="duplicate id 'x'"):
        with_ids([{"id": "x"}, {"id": "x"}], "calc")


def test_outputs_read_back_by_sft_and_task_source(tmp_path: Path) -> None:
    cfg = DistillConfig(sft_out=str(tmp_path / "sft.jsonl"), tasks_out=str(tmp_path / "tasks.jsonl"), k=4)
    summary = distill_from_results(cfg, TASKS, _groups())
    # task 0: one kept chat; task 1: four identical chats dedupe to one; task 2: none
    assert summary["sft_examples"] == 2 and summary["tasks_kept"] == 1
    assert summary["tasks_by_correct"] == {"0": 1, "3": 1, "4": 1} and summary["pass_rate"] == 7 / 12
    chats = demo_conversations(SFTConfig(demos="jsonl", demos_path=cfg.sft_out))
    assert len(chats) == 2 and chats[0][-1]["content"] == f"<answer>{TASKS[0]['answer']}</answer>"
    source = train_tasks(TaskConfig(source="jsonl", path=cfg.tasks_out))
    assert len(source) == 1 and source[0]["expression"] == TASKS[0]["expression"]
    assert source[0]["measured_pass_rate"] == 0.75 and source[0]["id"] == "calculator-train-0"
    check_tasks(list(source), "calculator", cfg.tasks_out)
    (tmp_path / "sft.jsonl").unlink()
    only = distill_from_results(cfg, TASKS, _groups(), outputs="tasks")
    assert "sft_examples" not in only and not (tmp_path / "sft.jsonl").exists()


def test_run_distill_plumbing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_sample(policy, tasks, env, engine, k, **kw):  # noqa: ANN001, ANN202
        seen.update(tasks=tasks, k=k)
        return _groups()

    monkeypatch.setattr(distill, "sample_rollouts", fake_sample)
    monkeypatch.setattr(distill, "load_checked_policy", lambda *a: type("P", (), {"step": 5})())
    src = tmp_path / "train.jsonl"
    src.write_text("".join(json.dumps(dict(t, id=f"t{i}")) + "\n" for i, t in enumerate(TASKS)))
    cfg = from_dict(DistillConfig, {"tasks": {"source": "jsonl", "path": str(src)}, "k": 4, "num_tasks": 3,
                                    "sft_out": str(tmp_path / "o" / "sft.jsonl"),
                                    "tasks_out": str(tmp_path / "o" / "tasks.jsonl")})
    summary = distill.run_distill(cfg, "ckpt")
    assert seen["k"] == 4 and [t["id"] for t in seen["tasks"]] == ["t0", "t1", "t2"]
    assert summary["step"] == 5 and summary["sft_examples"] == 2 and summary["tasks_kept"] == 1
    kept = [json.loads(x) for x in (tmp_path / "o" / "tasks.jsonl").read_text().splitlines()]
    assert [t["id"] for t in kept] == ["t0"]


@pytest.mark.slow  # ~30 s on an idle 2-core machine, mostly compiling the engine's programs
def test_distill_cli_on_a_tiny_policy(tmp_path: Path) -> None:
    tiny_policy_dir(tmp_path / "pol")
    sft_out, tasks_out = tmp_path / "sft.jsonl", tmp_path / "tasks.jsonl"
    rc = main(["distill", str(ROOT / "configs" / "distill_calculator.yaml"), "--checkpoint", str(tmp_path / "pol"),
               "--outputs", "tasks", "num_tasks=2", "k=2", "tasks.num_tasks=8", f"tasks.data_dir={tmp_path / 'data'}",
               f"sft_out={sft_out}", f"tasks_out={tasks_out}", *TINY_ENGINE])
    assert rc == 0
    assert tasks_out.is_file() and not sft_out.exists()
    for line in tasks_out.read_text().splitlines():  # a random policy rarely passes: whatever it kept is 0<p<1
        assert 0.0 < json.loads(line)["measured_pass_rate"] < 1.0


def test_errors_name_key_and_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = main(["distill", str(ROOT / "configs" / "distill_calculator.yaml"), "--checkpoint", str(tmp_path),
               f"sft_out={blocker}/sft.jsonl"])
    assert rc == 2 and f"{blocker}/sft.jsonl" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "expression": "1+2", "answer": "3"}\n[1, 2]\n')
    rc = main(["distill", str(ROOT / "configs" / "distill_calculator.yaml"), "--checkpoint", str(tmp_path),
               "tasks.source=jsonl", f"tasks.path={bad}", f"sft_out={tmp_path}/s.jsonl",
               f"tasks_out={tmp_path}/t.jsonl"])
    assert rc == 2 and "bad.jsonl:2" in capsys.readouterr().err
    rc = main(["distill", str(ROOT / "configs" / "distill_calculator.yaml"), "--checkpoint", str(tmp_path / "nope"),
               "tasks.num_tasks=4", "num_tasks=2", f"tasks.data_dir={tmp_path / 'data'}",
               f"sft_out={tmp_path}/s.jsonl", f"tasks_out={tmp_path}/t.jsonl"])
    assert rc == 2 and "not a vagent run directory" in capsys.readouterr().err
    with pytest.raises(ValueError, match="min_pass_rate"):
        from_dict(DistillConfig, {"min_pass_rate": 0.5, "max_pass_rate": 0.5})
