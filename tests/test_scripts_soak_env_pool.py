"""scripts/soak_env_pool.py: rollouts through the real env worker pool under injected faults come back
exactly once each, every fault counted under its kind, the pool back to its worker count, and nothing
(process, fd, temp file) left behind. 50 rollouts by default; the 1,000-rollout soak is slow."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fault_fixture_env import FAULTS, fault_tasks

ROOT = Path(__file__).resolve().parents[1]
# The script's own deadline bounds a lost trajectory; this one bounds the process on a loaded machine.
TIMEOUT_S = {50: 300, 1000: 1200}


@pytest.fixture
def short_tmp() -> Path:
    """A temp dir with a short path: the forkserver's socket lives below it (AF_UNIX paths: 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="soak", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _soak(tmp_path: Path, rollouts: int) -> dict:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "soak_env_pool.py"), "--rollouts", str(rollouts),
                        "--json"], capture_output=True, text=True, timeout=TIMEOUT_S[rollouts], env=env, cwd=ROOT)
    assert r.stdout.startswith("{"), (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    out = json.loads(r.stdout)
    assert r.returncode == (0 if out["ok"] else 1), r.stderr[-3000:]
    assert list(tmp_path.iterdir()) == [], "the script's private temp dir outlived it"
    return out


def _check(out: dict, rollouts: int) -> None:
    assert out["checks"] == {k: True for k in out["checks"]}, out
    assert out["lost"] == 0 and out["returned_twice"] == 0 and out["late_results"] == 0
    injected = {k: out["injected"][k] for k in FAULTS}
    assert all(v >= 1 for v in injected.values()) and out["counted"] == {**injected,
                                                                         "ok": rollouts - sum(injected.values())}
    # each hang, segfault and SIGKILL costs its worker; nothing else does
    assert out["workers_replaced"] == injected["hang"] + injected["segfault"] + injected["worker_sigkill"]
    assert out["workers_at_end"] == out["workers"] and out["leftover_processes"] == []
    assert out["leftover_fds"] == [] and out["leftover_temp"] == []


def test_fault_tasks_hold_each_fault_at_its_rate() -> None:
    rates = {"env_raises": 0.03, "hang": 0.01, "segfault": 0.02, "worker_sigkill": 0.02, "verifier_raises": 0.03}
    tasks = fault_tasks(1000, rates, seed=0)
    counts = {k: sum(t["fault"] == k for t in tasks) for k in FAULTS}
    assert counts == {"env_raises": 30, "hang": 10, "segfault": 20, "worker_sigkill": 20, "verifier_raises": 30}
    assert fault_tasks(1000, rates, seed=0) == tasks and fault_tasks(1000, rates, seed=1) != tasks
    assert {t["fault_turn"] for t in tasks} == {1, 2}
    with pytest.raises(ValueError, match="do not fit"):
        fault_tasks(3, rates, seed=0)


def test_soak_50_rollouts(short_tmp: Path) -> None:
    _check(_soak(short_tmp, 50), 50)


@pytest.mark.slow  # about a minute: 1,000 rollouts, 50 worker replacements, 10 hangs of one deadline each
def test_soak_1000_rollouts(short_tmp: Path) -> None:
    _check(_soak(short_tmp, 1000), 1000)
