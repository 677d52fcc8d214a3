"""Checkpointer: exact round trip, retention, incomplete checkpoints, resharding across device counts."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vagent_jax.config import ConfigError, from_dict
from vagent_jax.train.checkpoint import CheckpointOptions, Checkpointer, abstract_of


def _state(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "params": {"w": jnp.asarray(rng.standard_normal((6, 5)), jnp.float32),
                   "e": jnp.asarray(rng.standard_normal((4, 3)), jnp.bfloat16)},
        "opt": {"mu": jnp.asarray(rng.standard_normal((6, 5)), jnp.float32), "count": jnp.int32(seed)},
        "step": jnp.int32(seed),
    }


def _assert_bitwise_equal(a, b) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def test_roundtrip_is_bitwise_and_keeps_extra(tmp_path: Path) -> None:
    state = _state(7)
    extra = {"data_iter": {"next_index": 42, "epoch": 1}, "counters": {"tokens": 12345},
             "config": {"rl": {"eps_low": 0.2}}}
    with Checkpointer(tmp_path / "ck") as ck:
        assert ck.restore_latest(abstract_of(state)) is None
        assert ck.save(7, state, extra)
        ck.wait_until_finished()
        out = ck.restore_latest(abstract_of(state))
    assert out is not None and out.step == 7
    _assert_bitwise_equal(out.state, state)
    assert out.state["params"]["e"].dtype == jnp.bfloat16
    assert out.extra == extra
    assert sorted(p.name for p in (tmp_path / "ck" / "7").iterdir() if p.is_dir()) == ["extra", "state"]


def test_retention_keeps_last_n_plus_best(tmp_path: Path) -> None:
    state = _state(1)
    opts = CheckpointOptions(keep_last=2, best_metric="pass_rate", best_mode="max", keep_best=1)
    with Checkpointer(tmp_path / "max", opts) as ck:
        for step, score in [(1, 0.2), (2, 0.9), (3, 0.1), (4, 0.3), (5, 0.4)]:
            ck.save(step, state, metrics={"pass_rate": score, "loss": 1.0})
        ck.wait_until_finished()
        assert ck.all_steps() == [2, 4, 5]
        assert ck.best_step() == 2
    opts = CheckpointOptions(keep_last=1, best_metric="loss", best_mode="min", keep_best=2)
    with Checkpointer(tmp_path / "min", opts) as ck:
        for step, loss in [(1, 0.5), (2, 0.9), (3, 0.1), (4, 0.7)]:
            ck.save(step, state, metrics={"loss": loss})
        ck.wait_until_finished()
        assert ck.all_steps() == [1, 3, 4]
        assert ck.best_step() == 3
    with Checkpointer(tmp_path / "plain", CheckpointOptions(keep_last=2)) as ck:
        for step in range(4):
            ck.save(step, state)
        ck.wait_until_finished()
        assert ck.all_steps() == [2, 3]


def test_listing_that_meets_a_step_deleted_by_retention_waits_and_lists_again(tmp_path: Path) -> None:
    """The race of a listing with retention: orbax's reload stats a step directory that the async save's
    finalisation has just deleted (FileNotFoundError). Forced here: the first reload after the save raises
    exactly that, while the save is still in flight; the listing waits for it and returns what is on disk."""
    state = _state(2)
    with Checkpointer(tmp_path / "race", CheckpointOptions(keep_last=1)) as ck:
        ck.save(1, state)
        ck.wait_until_finished()
        real_reload, calls = ck._manager.reload, []

        def racing_reload() -> None:
            calls.append(1)
            if len(calls) == 1:
                raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "race" / "1"))
            real_reload()

        ck._manager.reload = racing_reload  # type: ignore[method-assign]
        ck.save(2, state)  # async: step 1 is deleted when it commits
        assert ck.all_steps() == [2] and ck.latest_step() == 2 and len(calls) == 3


def test_save_interval_skips_steps_unless_forced(tmp_path: Path) -> None:
    state = _state(2)
    with Checkpointer(tmp_path / "ck", CheckpointOptions(keep_last=10, save_interval_steps=3)) as ck:
        saved = [ck.save(s, state) for s in range(1, 7)]
        assert ck.save(7, state, force=True)
        ck.wait_until_finished()
        assert saved == [True, False, True, False, False, True]  # the first save always lands
        assert ck.all_steps() == [1, 3, 6, 7]


def test_bad_inputs_name_the_fault(tmp_path: Path) -> None:
    state = _state(3)
    with pytest.raises(ConfigError, match="checkpoint.keep_last"):
        from_dict(CheckpointOptions, {"keep_last": 0}, prefix="checkpoint")
    with pytest.raises(ConfigError, match="best_mode"):
        from_dict(CheckpointOptions, {"best_mode": "median"})
    with Checkpointer(tmp_path / "a", CheckpointOptions(best_metric="reward")) as ck:
        with pytest.raises(KeyError, match="reward"):
            ck.save(1, state, metrics={"loss": 1.0})
        with pytest.raises(ValueError, match="reward"):
            ck.save(1, state, metrics={"reward": float("nan")})
    with Checkpointer(tmp_path / "b") as ck:
        with pytest.raises(TypeError, match=r"extra\['data_iter'\]"):
            ck.save(1, state, {"data_iter": object()})
        ck.save(1, state)
        ck.wait_until_finished()
        no_sharding = abstract_of(state)
        no_sharding["params"]["e"] = jax.ShapeDtypeStruct((4, 3), jnp.bfloat16)
        with pytest.raises(ValueError, match=r"\['params'\]\['e'\] has no sharding"):
            ck.restore_latest(no_sharding)
        wrong = abstract_of({"other": jnp.zeros(3)})
        with pytest.raises(ValueError, match="cannot restore checkpoint"):
            ck.restore_latest(wrong)


def test_uncommitted_step_directory_is_ignored_and_saving_continues(tmp_path: Path) -> None:
    """orbax on a local disk writes `<step>.orbax-checkpoint-tmp*` and renames it when done: simulate a cut."""
    s1, s2 = _state(1), _state(2)
    with Checkpointer(tmp_path / "ck") as ck:
        ck.save(1, s1)
        ck.save(2, s2)
        ck.wait_until_finished()
    (tmp_path / "ck" / "2").rename(tmp_path / "ck" / "2.orbax-checkpoint-tmp-1700000000")
    with Checkpointer(tmp_path / "ck") as ck:
        out = ck.restore_latest(abstract_of(s1))
        assert out is not None and out.step == 1
        _assert_bitwise_equal(out.state, s1)
        ck.save(2, s2)
        ck.save(3, s1)
        ck.wait_until_finished()
        assert ck.all_steps() == [1, 2, 3]
        _assert_bitwise_equal(ck.restore(2, abstract_of(s2)).state, s2)
    assert not list((tmp_path / "ck").glob("*orbax-checkpoint-tmp*"))


_ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}

_KILL_CHILD = """
import sys, time, asyncio
import jax, numpy as np
from orbax.checkpoint._src.path import atomicity
from vagent_jax.train.checkpoint import Checkpointer
d = sys.argv[1]
ck = Checkpointer(d)
state = {"w": np.arange(256 * 256, dtype=np.float32).reshape(256, 256), "step": np.int32(1)}
ck.save(1, jax.tree.map(jax.numpy.asarray, state), {"it": 1})
ck.wait_until_finished()
async def never_commit(self):  # every file of step 2 gets written; the commit (rename) never comes
    await asyncio.sleep(3600)
atomicity.AtomicRenameTemporaryPath.finalize = never_commit
state["w"] = state["w"] + 1
ck.save(2, jax.tree.map(jax.numpy.asarray, state), {"it": 2})
print("SAVING", flush=True)
time.sleep(3600)
"""


def test_sigkill_during_async_save_restores_previous_step(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(_KILL_CHILD)
    ckdir = tmp_path / "ck"
    proc = subprocess.Popen([sys.executable, str(script), str(ckdir)], env=_ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "SAVING", proc.stderr.read() if proc.stderr else ""
        deadline = time.monotonic() + 180  # generous: an idle machine writes step 2 in well under a second
        while not list(ckdir.glob("2.orbax-checkpoint-tmp*/state*/_METADATA")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(ckdir.glob("2.orbax-checkpoint-tmp*/state*/_METADATA")), "step 2 was never written"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (ckdir / "2").exists()
    abstract = abstract_of({"w": jnp.zeros((256, 256), jnp.float32), "step": jnp.int32(0)})
    with Checkpointer(ckdir) as ck:
        out = ck.restore_latest(abstract)
        assert out is not None and out.step == 1 and out.extra == {"it": 1}
        np.testing.assert_array_equal(out.state["w"], np.arange(256 * 256, dtype=np.float32).reshape(256, 256))
        ck.save(2, out.state, {"it": 2})
        ck.wait_until_finished()
        assert ck.all_steps() == [1, 2]
    assert not list(ckdir.glob("*orbax-checkpoint-tmp*")), "the cut-off step 2 was not cleaned up"


_SAVE_8 = """
import sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from vagent_jax.train.checkpoint import Checkpointer
assert jax.device_count() == 8, jax.device_count()
mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
rng = np.random.default_rng(0)
host = {"params": {"w": rng.standard_normal((8, 16)).astype(np.float32),
                   "e": rng.standard_normal((16, 4)).astype(jnp.bfloat16)},
        "opt": {"mu": rng.standard_normal((8, 16)).astype(np.float32)}, "step": np.int32(9)}
specs = {"params": {"w": P("data", "model"), "e": P("model", None)}, "opt": {"mu": P("data", "model")},
         "step": P()}
state = jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), host, specs)
assert len(state["params"]["w"].sharding.device_set) == 8
with Checkpointer(sys.argv[1]) as ck:
    ck.save(9, state, {"it": 9})
np.savez(sys.argv[2], w=host["params"]["w"], e=host["params"]["e"].view(np.uint16), mu=host["opt"]["mu"])
print("SAVED")
"""

_RESTORE_N = """
import sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from vagent_jax.train.checkpoint import Checkpointer
n = int(sys.argv[3])
assert jax.device_count() == n, jax.device_count()
shape = {1: (1, 1), 4: (2, 2)}[n]
mesh = Mesh(np.array(jax.devices()).reshape(shape), ("data", "model"))
def sds(shp, dt, spec):
    return jax.ShapeDtypeStruct(shp, dt, sharding=NamedSharding(mesh, spec))
abstract = {"params": {"w": sds((8, 16), jnp.float32, P("data", "model")),
                       "e": sds((16, 4), jnp.bfloat16, P("model", None))},
            "opt": {"mu": sds((8, 16), jnp.float32, P(None, "model"))}, "step": sds((), jnp.int32, P())}
with Checkpointer(sys.argv[1]) as ck:
    out = ck.restore_latest(abstract)
ref = np.load(sys.argv[2])
assert out.step == 9 and out.extra == {"it": 9}
got = {"w": np.asarray(out.state["params"]["w"]), "e": np.asarray(out.state["params"]["e"]).view(np.uint16),
       "mu": np.asarray(out.state["opt"]["mu"])}
for k in ("w", "e", "mu"):
    assert got[k].tobytes() == ref[k].tobytes(), k
assert int(out.state["step"]) == 9
for leaf, want in zip(jax.tree.leaves(out.state), jax.tree.leaves(abstract)):
    assert leaf.sharding == want.sharding, (leaf.sharding, want.sharding)
assert len(out.state["params"]["w"].sharding.device_set) == n
print("RESTORED", n)
"""


def _run(script: Path, args: list[str], devices: int) -> str:
    env = {**_ENV, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    res = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-4000:]
    return res.stdout


def test_checkpoint_from_8_devices_restores_resharded_on_1_and_4(tmp_path: Path) -> None:
    save, restore = tmp_path / "save.py", tmp_path / "restore.py"
    save.write_text(textwrap.dedent(_SAVE_8))
    restore.write_text(textwrap.dedent(_RESTORE_N))
    ckdir, ref = tmp_path / "ck", tmp_path / "ref.npz"
    assert "SAVED" in _run(save, [str(ckdir), str(ref)], 8)
    for n in (1, 4):
        assert f"RESTORED {n}" in _run(restore, [str(ckdir), str(ref), str(n)], n)
