"""Checkpointer crash consistency: a SIGKILL while an async save is being written resumes from the last
complete step and ends bitwise equal to an uninterrupted run; an unreadable newest checkpoint (a file cut
short, a missing item) is skipped with a warning naming it; a full disk during a save stops with a clear
error and leaves the previous checkpoint restorable."""
from __future__ import annotations

import errno
import glob
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vagent_jax.train.checkpoint import (CheckpointOptions, Checkpointer, CheckpointWriteError,
                                         UnreadableCheckpointWarning, abstract_of)
from vagent_jax.train.run_common import RunStopped

from disk_fixtures import small_disk

_ENV = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, "JAX_PLATFORMS": "cpu",
        "PYTHONUNBUFFERED": "1"}
STEPS = 6
# Generous deadlines (seconds) for child processes on a loaded 2-core machine; an idle one needs ~5 s.
CHILD_TIMEOUT_S = 180

# A toy training loop with the shape of the real ones: the state after step s depends on the state after
# s-1 and on fold_in(key, s); every step is saved asynchronously while the next one computes. With
# `hold` it makes the save of that step write every file and never commit, and says so.
_LOOP = """
import asyncio, sys
import jax, jax.numpy as jnp, numpy as np
from orbax.checkpoint._src.path import atomicity
from vagent_jax.train.checkpoint import Checkpointer, CheckpointOptions, abstract_of
ckdir, steps, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
hold = int(sys.argv[4]) if len(sys.argv) > 4 else -1
state = {"w": jnp.zeros((512, 512), jnp.float32), "mu": jnp.ones((512, 512), jnp.float32), "step": jnp.int32(0)}
key = jax.random.key(5)
@jax.jit
def train_step(state, key):
    g = jax.random.normal(jax.random.fold_in(key, state["step"]), state["w"].shape)
    mu = 0.9 * state["mu"] + 0.1 * jnp.tanh(g + state["w"])
    return {"w": state["w"] - 0.01 * mu, "mu": mu, "step": state["step"] + 1}
ck = Checkpointer(ckdir, CheckpointOptions(keep_last=2))
restored = ck.restore_latest(abstract_of(state))
start = 0
if restored is not None:
    state, start = restored.state, restored.step
    assert restored.extra == {"it": start}
print("START", start, flush=True)
async def never_commit(self):
    await asyncio.sleep(3600)
for s in range(start, steps):
    state = train_step(state, key)
    if s + 1 == hold:
        ck.wait_until_finished()  # step s commits; only the save of `hold` never does
        atomicity.AtomicRenameTemporaryPath.finalize = never_commit
    ck.save(s + 1, state, {"it": s + 1})
    print("SAVING", s + 1, flush=True)
    if s + 1 == hold:
        jax.block_until_ready(state)
        import time; time.sleep(3600)
ck.close()
np.save(out, np.asarray(state["w"]))
print("DONE", flush=True)
"""


def _loop(tmp_path: Path, ckdir: Path, out: Path, *hold: int) -> subprocess.Popen:
    script = tmp_path / "loop.py"
    script.write_text(_LOOP)
    return subprocess.Popen([sys.executable, str(script), str(ckdir), str(STEPS), str(out), *map(str, hold)],
                            env=_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> str:
    stdout, stderr = proc.communicate(timeout=CHILD_TIMEOUT_S)
    assert proc.returncode == 0, stderr[-3000:]
    return stdout


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    _finish(_loop(tmp, tmp / "ck", tmp / "w.npy"))
    return np.load(tmp / "w.npy").tobytes()


def _wait_for(paths: Callable[[], list], proc: subprocess.Popen, what: str) -> None:
    """Poll until `paths()` is non-empty (event: a file appears), failing after a generous deadline."""
    end = time.monotonic() + CHILD_TIMEOUT_S
    while not paths():
        assert proc.poll() is None, f"the child exited before {what}: {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < end, f"{what} did not happen within {CHILD_TIMEOUT_S} s"
        time.sleep(0.01)


@pytest.mark.parametrize("when", ["mid_write", "all_written_uncommitted"])
def test_sigkill_during_async_save_resumes_bitwise_equal(tmp_path: Path, uninterrupted: bytes, when: str) -> None:
    """mid_write: SIGKILL at a random moment (seeded) after step 4's temporary directory appears, so the
    write, the commit or the next step may be cut; all_written_uncommitted: every file of step 4 is on
    disk but the rename that commits it never happens."""
    ckdir = tmp_path / "ck"
    hold = (4,) if when == "all_written_uncommitted" else ()
    proc = _loop(tmp_path, ckdir, tmp_path / "cut.npy", *hold)
    try:
        if hold:
            _wait_for(lambda: glob.glob(f"{ckdir}/4.orbax-checkpoint-tmp*/state*/_METADATA"), proc, "step 4's files")
        else:
            _wait_for(lambda: glob.glob(f"{ckdir}/4.orbax-checkpoint-tmp*"), proc, "step 4's save")
            time.sleep(random.Random(18).uniform(0.0, 0.05))
    finally:
        proc.kill()
        proc.communicate(timeout=CHILD_TIMEOUT_S)
    assert proc.returncode == -signal.SIGKILL
    with Checkpointer(ckdir) as ck:
        committed = ck.all_steps()
    assert committed and max(committed) < STEPS, committed
    if hold:
        assert max(committed) == 3 and not (ckdir / "4").exists()
    resumed = _loop(tmp_path, ckdir, tmp_path / "resumed.npy")
    out = _finish(resumed)
    assert f"START {max(committed)}" in out
    assert np.load(tmp_path / "resumed.npy").tobytes() == uninterrupted
    assert not glob.glob(f"{ckdir}/*orbax-checkpoint-tmp*"), "the cut-off save was not cleaned up"


# ----- unreadable newest checkpoint --------------------------------------------------------------------
def _state(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"w": jnp.asarray(rng.standard_normal((128, 64)), jnp.float32), "step": jnp.int32(seed)}


def _largest_data_file(step_dir: Path) -> Path:
    return max((p for p in step_dir.glob("state/**/d/*") if p.is_file()), key=lambda p: p.stat().st_size)


def _cut_short(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


DAMAGE = {
    "array_file_cut_short": lambda d: _cut_short(_largest_data_file(d)),
    "array_file_overwritten": lambda d: _largest_data_file(d).write_bytes(b"\0" * 64),
    "state_metadata_cut_short": lambda d: _cut_short(d / "state" / "_METADATA"),
    "extra_item_missing": lambda d: shutil.rmtree(d / "extra"),
    "state_item_missing": lambda d: shutil.rmtree(d / "state"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_unreadable_newest_checkpoint_is_skipped_with_a_warning(tmp_path: Path, damage: str) -> None:
    ckdir = tmp_path / "ck"
    with Checkpointer(ckdir) as ck:
        for s in (1, 2, 3):
            ck.save(s, _state(s), {"it": s})
    DAMAGE[damage](ckdir / "3")
    with Checkpointer(ckdir) as ck:
        with pytest.warns(UnreadableCheckpointWarning, match=f"checkpoint {ckdir}/3 is unreadable"):
            out = ck.restore_latest(abstract_of(_state(0)))
        assert out.step == 2 and out.extra == {"it": 2}
        assert np.asarray(out.state["w"]).tobytes() == np.asarray(_state(2)["w"]).tobytes()
        assert (ckdir / "3.unreadable").is_dir() and ck.all_steps() == [1, 2]
        ck.save(3, out.state, {"it": 3})  # the resumed run saves step 3 again
        ck.wait_until_finished()
        assert ck.all_steps() == [1, 2, 3]


def test_when_no_checkpoint_is_readable_the_newest_error_is_raised(tmp_path: Path) -> None:
    ckdir = tmp_path / "ck"
    with Checkpointer(ckdir) as ck:
        for s in (1, 2):
            ck.save(s, _state(s), {"it": s})
    for s in (1, 2):
        shutil.rmtree(ckdir / str(s) / "extra")
    with Checkpointer(ckdir) as ck:
        with pytest.raises(ValueError, match=f"cannot restore checkpoint {ckdir}/2 .*extra"):
            ck.restore_latest(abstract_of(_state(0)))
    assert (ckdir / "2").is_dir(), "nothing is moved aside when no older step restores"


# ----- full disk ---------------------------------------------------------------------------------------
def _inject_disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a small file system: the commit of the save fails as a full disk would fail it."""
    from orbax.checkpoint._src.path import atomicity

    async def full(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.get()))

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", full)


def test_full_disk_during_save_stops_with_a_clear_error_and_keeps_the_previous(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = {"w": jnp.arange(64 * 64, dtype=jnp.float32).reshape(64, 64)}
    big = {"w": jax.random.normal(jax.random.key(0), (512, 512))}  # 1 MiB: more than the disk has left
    mnt = tmp_path / "disk"
    with small_disk(mnt, "600k") as mounted:
        ckdir = mnt / "ck"
        ck = Checkpointer(ckdir, CheckpointOptions(keep_last=1))
        ck.save(1, small, {"it": 1})
        ck.wait_until_finished()
        if not mounted:
            _inject_disk_full(monkeypatch)
        with pytest.raises(CheckpointWriteError,
                           match=rf"checkpoint step 2 could not be written to {ckdir}: no space left on device; "
                                 r"the previous checkpoint \(step 1\) is intact") as info:
            ck.save(2, big, {"it": 2})
            ck.wait_until_finished()
        assert isinstance(info.value, RunStopped)  # the CLI's "the run stopped itself" exit (3)
        ck.close()
        monkeypatch.undo()
        assert not (ckdir / "2").exists()
        with Checkpointer(ckdir) as again:
            out = again.restore_latest(abstract_of(small))
        assert out.step == 1 and out.extra == {"it": 1}
        assert np.asarray(out.state["w"]).tobytes() == np.asarray(small["w"]).tobytes()
