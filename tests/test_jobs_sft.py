"""`vagent sft`: runs end to end from a YAML config, resumes exactly after SIGKILL, stops on NaN streaks and
on a full disk, rejects bad config keys, JSONL demonstrations with a malformed record, and unwritable output dirs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from vagent_jax.cli import main
from vagent_jax.sharding import MeshConfig, make_mesh
from vagent_jax.train.policy_dir import load_policy
from vagent_jax.train.checkpoint import Checkpointer
from vagent_jax.jobs.sft import batch_for_step

from disk_fixtures import fill, small_disk

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.n_kv_heads=1", "model.head_dim=16",
        "model.d_ff=64", "tasks.num_tasks=48", "batch_size=4", "seq_len=192", "log_every=1", "num_devices=1"]


def _cli(args: list[str], data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "vagent_jax.cli", *args, f"tasks.data_dir={data_dir}"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _params(run_dir: Path, step: int | None = None) -> list[np.ndarray]:
    mesh = make_mesh(MeshConfig(), devices=jax.devices()[:1])
    return [np.asarray(x) for x in jax.tree.leaves(load_policy(run_dir, mesh, step).params)]


def test_batch_order_is_a_per_epoch_permutation() -> None:
    order = [batch_for_step(s, 5, seed=3) for s in range(15)]
    for e in range(3):
        assert sorted(order[5 * e:5 * e + 5]) == list(range(5))
    assert order[:5] != order[5:10] or order[5:10] != order[10:15]
    assert order == [batch_for_step(s, 5, seed=3) for s in range(15)]


def test_sigkill_then_resume_is_bitwise_equal(tmp_path: Path) -> None:
    cfg = tmp_path / "sft.yaml"
    cfg.write_text("steps: 30\nsave_every: 4\noptimizer:\n  total_steps: 30\n  warmup_steps: 2\n")
    data = tmp_path / "data"
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run(_cli(["sft", str(cfg), f"out_dir={full}", *TINY], data), env=_env(), check=True,
                   capture_output=True, cwd=ROOT, timeout=300)
    proc = subprocess.Popen(_cli(["sft", str(cfg), f"out_dir={cut}", *TINY], data), env=_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (cut / "checkpoints" / "8").is_dir() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps = sorted(int(p.name) for p in (cut / "checkpoints").iterdir() if p.name.isdigit())
    assert steps and max(steps) < 30, f"the run was not cut short: {steps}"
    r = subprocess.run(_cli(["sft", str(cfg), f"out_dir={cut}", "--resume", *TINY], data), env=_env(),
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((cut / "summary.json").read_text())
    assert summary["resumed_from"] > 0
    for a, b in zip(_params(full), _params(cut)):
        np.testing.assert_array_equal(a, b)


def test_bad_key_and_bad_type_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("stepz: 3\n")
    assert main(["sft", str(cfg)]) == 2
    assert "stepz" in capsys.readouterr().err
    cfg.write_text("optimizer:\n  lr: fast\n")
    assert main(["sft", str(cfg)]) == 2
    assert "optimizer.lr" in capsys.readouterr().err


def test_malformed_jsonl_demo_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    demos = tmp_path / "demos.jsonl"
    demos.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n{not json\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"demos: jsonl\ndemos_path: {demos}\nout_dir: {tmp_path / 'o'}\n")
    assert main(["sft", str(cfg), "num_devices=1"]) == 2
    err = capsys.readouterr().err
    assert "demos.jsonl" in err and "2" in err


def test_unwritable_out_dir_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"  # a path under a regular file cannot be created, even by root
    blocker.write_text("")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"out_dir: {blocker / 'x'}\n")
    with pytest.raises(SystemExit, match="a_file/x.*not writable"):
        main(["sft", str(cfg)])


def test_direct_demo_fraction_mixes_tool_and_direct_demonstrations(tmp_path: Path) -> None:
    from vagent_jax.data.task_source import TaskConfig
    from vagent_jax.jobs.sft import SFTConfig, demo_conversations

    tasks = TaskConfig(env="calculator", num_tasks=400, eval_tasks=0, data_dir=str(tmp_path / "data"))
    chats = demo_conversations(SFTConfig(tasks=tasks, direct_demo_fraction=0.25))
    direct = [c for c in chats if not any(m["role"] == "tool" for m in c)]
    # seeded Bernoulli(0.25) over 400 tasks: 100 expected, sd ~8.7; bound at ~4 sd
    assert 65 <= len(direct) <= 135
    for chat in direct:  # answered at once, with the task's true answer
        assert chat[-1]["role"] == "assistant" and chat[-1]["content"].startswith("<answer>")
        assert sum(m["role"] == "assistant" for m in chat) == 1
    assert demo_conversations(SFTConfig(tasks=tasks, direct_demo_fraction=0.25)) == chats  # deterministic
    assert all(any(m["role"] == "tool" for m in c) for c in demo_conversations(SFTConfig(tasks=tasks)))


def test_direct_demo_fraction_out_of_range_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"out_dir: {tmp_path / 'o'}\ndirect_demo_fraction: 1.0\n")
    assert main(["sft", str(cfg)]) == 2
    assert "direct_demo_fraction" in capsys.readouterr().err


def test_full_disk_during_a_save_stops_the_run_and_keeps_the_previous_checkpoint(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkpoint directory is a small tmpfs (root) that fills up right before the second save."""
    out = tmp_path / "run"
    ckdir = out / "checkpoints"
    real_save, calls = Checkpointer.save, []

    def save(self, step, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(step)
        if len(calls) == 2:
            self.wait_until_finished()  # step 2 is committed, then the disk is full
            if mounted:
                fill(ckdir)
            else:
                from orbax.checkpoint._src.path import atomicity

                async def full(path_self, *a, **k):  # noqa: ANN001, ANN002, ANN003
                    raise OSError(28, os.strerror(28), str(path_self.get()))

                monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", full)
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(Checkpointer, "save", save)
    cfg = tmp_path / "sft.yaml"
    cfg.write_text("steps: 6\nsave_every: 2\noptimizer:\n  total_steps: 6\n  warmup_steps: 0\n")
    with small_disk(ckdir, "32m") as mounted:
        code = main(["sft", str(cfg), f"out_dir={out}", f"tasks.data_dir={tmp_path / 'data'}", *TINY])
        err = capsys.readouterr().err
        assert code == 3, err[-2000:]
        assert (f"checkpoint step 4 could not be written to {ckdir.absolute()}: no space left on device; "
                "the previous checkpoint (step 2) is intact") in err
        # step 4's asynchronous write fails in the background; the next save (step 6) reports it and stops
        assert calls == [2, 4, 6] and not (ckdir / "4").exists() and not (ckdir / "6").exists()
        (ckdir / "filler").unlink(missing_ok=True)
        params = _params(out)  # the newest checkpoint, step 2, loads
        assert params and all(np.isfinite(p).all() for p in params)
