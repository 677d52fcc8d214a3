"""`vagent rl` resumes exactly after a SIGKILL at a random point of a step: during the rollout, during the
update, during the (asynchronous) checkpoint save. The killed-and-resumed run's final params equal an
uninterrupted run's bitwise. The three-kill chain is slow; one kill during an update runs by default."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from vagent_jax.sharding import MeshConfig, make_mesh
from vagent_jax.train.checkpoint import Checkpointer
from vagent_jax.train.policy_dir import load_policy

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
COIN = ["tasks.env=coin_test", "tasks.env_modules=[vagent_jax.testing]"]
RL = COIN + ["tasks.num_tasks=16", "prompts_per_step=2", "group_size=2", "dynamic_sampling=false",
             "engine.batch_slots=4", "engine.max_len=96", "engine.max_new_tokens=8", "engine.chunk_steps=4",
             "num_devices=1", "env_workers=1", "save_every=1", "optimizer.lr=0.001", "checkpoint.keep_last=2"]
# A run is one process: import, policy load, compiles, a few tiny steps (~15 s idle on 2 cores). The
# deadline is for a machine under full load from other jobs.
RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def policy_dir(coin_policy_dir: Path) -> Path:
    """Any small policy will do: conftest's coin SFT policy."""
    return coin_policy_dir


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(TESTS))
    return env


def _run(policy: Path, out: Path, steps: int, kill: tuple[str, int, float] | None, resume: bool) -> None:
    """One `vagent rl` process; with `kill`, it must die by the SIGKILL armed at (phase, step, delay)."""
    phase, step, delay = kill or ("none", -1, 0.0)
    args = [f"init_from={policy}", f"tasks.data_dir={policy / 'data'}", f"out_dir={out}", *RL, f"steps={steps}"]
    recipe = out.parent / f"{out.name}.yaml"
    recipe.write_text(f"steps: {steps}\n")
    cmd = [sys.executable, str(TESTS / "rl_kill_driver.py"), phase, str(step), str(delay), "--", str(recipe),
           *(["--resume"] if resume else []), *args]
    r = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    if kill is None:
        assert r.returncode == 0, r.stderr[-3000:]
    else:
        assert r.returncode == -signal.SIGKILL and f"KILL {phase} {step}" in r.stderr, (r.returncode,
                                                                                        r.stderr[-3000:])


def _params(run_dir: Path) -> list[np.ndarray]:
    mesh = make_mesh(MeshConfig(), devices=jax.devices()[:1])
    return [np.asarray(x) for x in jax.tree.leaves(load_policy(run_dir, mesh).params)]


def _killed_and_resumed_equals_uninterrupted(policy: Path, tmp_path: Path, steps: int,
                                             kills: list[tuple[str, int]], seed: int) -> None:
    rng = random.Random(seed)
    full, cut = tmp_path / "full", tmp_path / "cut"
    _run(policy, full, steps, None, resume=False)
    for i, (phase, step) in enumerate(kills):
        _run(policy, cut, steps, (phase, step, rng.uniform(0.0, 0.05)), resume=i > 0)
        with Checkpointer(cut / "checkpoints") as ck:
            done = ck.latest_step() or 0
        assert done <= step + 1, f"killed in step {step}, yet step {done} is committed"
    _run(policy, cut, steps, None, resume=True)
    want, got = _params(full), _params(cut)
    assert len(want) == len(got)
    for a, b in zip(want, got):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_sigkill_during_an_update_resumes_bitwise_equal(policy_dir: Path, tmp_path: Path) -> None:
    _killed_and_resumed_equals_uninterrupted(policy_dir, tmp_path, 3, [("update", 1)], seed=6)


@pytest.mark.slow  # five processes of ~15 s each on an idle 2-core machine
def test_three_sigkills_in_rollout_update_and_save_resume_bitwise_equal(policy_dir: Path,
                                                                       tmp_path: Path) -> None:
    _killed_and_resumed_equals_uninterrupted(policy_dir, tmp_path, 5,
                                             [("rollout", 1), ("update", 2), ("save", 3)], seed=18)


def test_a_kill_armed_in_a_step_lands_in_that_step_even_when_the_phase_ends_first(policy_dir: Path,
                                                                                  tmp_path: Path) -> None:
    # 3 s is longer than a warm update: before the driver held the armed call, the kill landed in a later
    # step ("KILL update 2" for a kill armed in step 1, seen on an idle machine) or the run finished first
    out = tmp_path / "late"
    _run(policy_dir, out, 3, ("update", 1, 3.0), resume=False)
    with Checkpointer(out / "checkpoints") as ck:
        assert (ck.latest_step() or 0) <= 2
