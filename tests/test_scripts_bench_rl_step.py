"""scripts/bench_rl_step.py and its workload (vagent_jax/bench_rl_workload.py): the RL loop's collect +
update on the quick shape, the FLOP accounting, the in-process environment, and the --peers runner
(setup failure -> skipped, a peer's JSON line -> ratio). No timed assertions."""
from __future__ import annotations

import os
import pathlib
import stat
import sys

import numpy as np
import pytest

from script_module import load_script
from vagent_jax.bench_rl_workload import BENCH_ENV, QUICK_SHAPE, InProcessEnvPool, build_trainer, timed_engine
from vagent_jax.envs.base import Message

bench = load_script("bench_rl_step")


def test_collect_and_update_consume_every_rollout() -> None:
    trainer, pool, prompt_tokens = build_trainer(QUICK_SHAPE)
    timers = timed_engine(trainer)
    rows = QUICK_SHAPE.prompts * QUICK_SHAPE.group
    kept, rewards, every, counters = trainer.collect(pool, 0)
    assert len(kept) == len(every) == rows and rewards.shape == (rows,)  # dynamic sampling off: all kept
    gen = sum(x.trajectory.num_generated for x in every)
    assert rows <= gen <= rows * QUICK_SHAPE.gen
    assert all(len(x.trajectory.tokens) <= trainer.cfg.engine.max_len for x in every)
    assert timers.calls("prefill") >= 1 and timers.calls("decode") >= 1 and timers.calls("row") == rows
    m = trainer.update(kept, rewards, 0, 0.0)
    assert timers.calls("update") == 1
    assert m["tokens"] == gen  # the update's loss counted exactly the generated tokens of the rollouts
    assert prompt_tokens > 4 and counters["rounds"] == 1.0
    pool.close()


def test_in_process_pool_verifies_the_sum() -> None:
    pool = InProcessEnvPool()
    task = {"a": 12, "b": 34}
    for rid, answer in ((0, "46"), (1, "47")):
        pool.submit(rid, BENCH_ENV, {}, task, [Message("user", "12+34="), Message("assistant", answer)])
    assert pool.in_flight() == 2
    steps = dict(pool.poll())
    assert pool.in_flight() == 0 and steps[0].done and steps[1].done
    assert steps[0].reward.correct and not steps[1].reward.correct


def test_quick_run_reports_flops_and_breakdown() -> None:
    out = bench.main(["--quick", "--steps", "2", "--warmup", "1", "--json"])
    b = out["breakdown_s"]
    n, R, T, P = out["params"], out["rollouts"], out["update_len"], out["prompt_tokens"]
    assert T == P + QUICK_SHAPE.gen + 1 and R == QUICK_SHAPE.prompts * QUICK_SHAPE.group
    assert out["step_flops"] == pytest.approx(2 * n * (R * P + b["generated_tokens"]) + 6 * n * R * T)
    assert out["mfu"] == pytest.approx(out["step_flops"] / (out["s_per_step"] * out["peak_flops"]))
    assert out["flop_bound_s"] == pytest.approx(out["step_flops"] / out["peak_flops"])
    assert len(out["per_step_s"]) == 3 and out["s_per_step"] == pytest.approx(np.mean(out["per_step_s"][1:]))
    parts = b["prefill_s"] + b["decode_s"] + b["row_reads_s"] + b["rollout_host_s"]
    assert parts == pytest.approx(b["rollout_s"]) and b["rollout_s"] < b["step_s"]
    assert b["decode_chunks"] >= 1 and b["old_logprob_s"] == 0.0 and b["update_step_s"] > 0


@pytest.mark.slow
def test_old_logprob_pass_is_counted_with_several_updates() -> None:
    out = bench.run(1, 1, True, 2)
    b = out["breakdown_s"]
    assert b["old_logprob_s"] > 0
    n, R, T, P = out["params"], out["rollouts"], out["update_len"], out["prompt_tokens"]
    assert out["step_flops"] == pytest.approx(2 * n * (R * P + b["generated_tokens"]) + 8 * n * R * T)


def _executable(path: pathlib.Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_peers_skipped_or_compared(tmp_path, monkeypatch) -> None:
    peers = tmp_path / "peers"
    peers.mkdir()
    _executable(peers / "setup_trl.sh", "echo no torch here >&2; exit 1\n")
    _executable(peers / "setup_tunix.sh", "exit 0\n")
    (peers / "tunix_grpo.py").write_text('print("noise")\nprint(\'{"s_per_step": 3.0}\')\n')
    (peers / "ours_grpo.py").write_text("raise SystemExit(4)\n")
    venv = tmp_path / "tunix" / "bin"
    venv.mkdir(parents=True)
    os.symlink(sys.executable, venv / "python")
    monkeypatch.setattr(bench, "PEERS_DIR", str(peers))
    monkeypatch.setenv("PEER_TUNIX_VENV", str(tmp_path / "tunix"))
    out = bench.run_peers(1.5)
    assert "setup_trl.sh failed" in out["trl"]["skipped"] and "no torch here" in out["trl"]["skipped"]
    assert out["tunix"] == {"s_per_step": 3.0, "peer_over_ours": 2.0}
    assert "exited 4" in out["ours_public_api"]["skipped"]
