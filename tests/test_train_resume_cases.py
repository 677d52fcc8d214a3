"""Issue #9 point 4, the resume cases that break trainers:
(a) the task order after a resume equals the uninterrupted order (iterator state mid-epoch; the RL loop);
(b) a checkpoint taken exactly at an epoch boundary resumes into the next epoch, not into a run of 0 steps;
(c) several updates per rollout batch use every row exactly once and never step on padding alone;
(d) a checkpoint written on 4 devices restores bitwise on 2 and on 1 (resharded by the mesh rules).

The iterator, mini-batch and checkpoint cases run in seconds; the RL-loop cases are marked slow (each
builds a tiny policy and runs the real loop: rollouts, env workers, updates, orbax checkpoints).
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from vagent_jax.config import load_config
from vagent_jax.data.task_pipeline import TaskIterator, task_iterator
from vagent_jax.jobs import rl as rl_run
from vagent_jax.jobs.rl import RLConfig, RLTrainer, run_rl
from vagent_jax.models.config import ModelConfig
from vagent_jax.rl import dynamic_sampling, rollout_batch
from vagent_jax.rl.rollout_batch import minibatch_slices
from vagent_jax.sharding import MeshConfig, make_mesh
from vagent_jax.train.checkpoint import Checkpointer
from vagent_jax.train.metrics_writer import read_jsonl_scalars
from vagent_jax.train.optimizer import OptimizerConfig
from vagent_jax.train.train_state import create_train_state, state_shardings

TESTS = Path(__file__).resolve().parent
TASKS8 = [{"id": i} for i in range(8)]


def _ids(tasks: list[dict]) -> list[int]:
    return [t["id"] for t in tasks]


# ----- (a), (b) on the iterator ---------------------------------------------------------------------------
def test_iterator_resumed_mid_epoch_continues_the_uninterrupted_order() -> None:
    full = task_iterator(TASKS8, seed=7, shard_index=0, shard_count=1)
    want = _ids(full.take(3 * 8))  # three epochs
    it = task_iterator(TASKS8, seed=7, shard_index=0, shard_count=1)
    head = _ids(it.take(5))  # stop mid-epoch; the state goes through JSON like the checkpoint's extra item
    state = json.loads(json.dumps(it.get_state()))
    resumed = task_iterator(TASKS8, seed=7, shard_index=0, shard_count=1)
    resumed.set_state(state)
    assert head + _ids(resumed.take(3 * 8 - 5)) == want
    assert sorted(want[8:16]) == list(range(8)) and want[8:16] != want[:8]  # each epoch: a fresh permutation
    other = task_iterator(TASKS8, seed=8, shard_index=0, shard_count=1)
    with pytest.raises(ValueError, match="'seed'"):  # a state from another shuffle seed is refused, by key
        other.set_state(state)


def test_iterator_state_at_epoch_boundary_resumes_into_the_next_epoch() -> None:
    full = task_iterator(TASKS8, seed=3, shard_index=0, shard_count=1)
    epoch0, epoch1 = _ids(full.take(8)), _ids(full.take(8))
    it = task_iterator(TASKS8, seed=3, shard_index=0, shard_count=1)
    it.take(4)
    it.take(4)  # prompts_per_step 4: two steps end exactly at the epoch boundary
    resumed = task_iterator(TASKS8, seed=3, shard_index=0, shard_count=1)
    resumed.set_state(json.loads(json.dumps(it.get_state())))
    assert resumed.epoch == 1 and resumed.next_index == 8
    assert _ids(resumed.take(4)) == epoch1[:4] and epoch1 != epoch0


# ----- (c) mini-batch split ----------------------------------------------------------------------------
@pytest.mark.parametrize("rows, updates, used", [(16, 2, 16), (16, 4, 16), (16, 2, 5), (16, 4, 9), (8, 1, 3),
                                                 (12, 3, 1)])
def test_minibatches_cover_every_used_row_once_and_skip_pure_padding(rows: int, updates: int, used: int) -> None:
    parts = minibatch_slices(rows, updates, used)
    seen = np.concatenate([np.arange(rows)[p] for p in parts])
    assert len(seen) == len(set(seen.tolist()))  # nothing repeated
    assert set(range(used)) <= set(seen.tolist())  # nothing skipped
    assert all(p.start < used for p in parts)  # no update on padding alone
    assert len({p.stop - p.start for p in parts}) == 1  # one compiled update shape


def test_minibatch_bad_split_names_the_option() -> None:
    with pytest.raises(ValueError, match="updates_per_batch"):
        minibatch_slices(10, 3, 10)
    with pytest.raises(ValueError, match="used_rows"):
        minibatch_slices(8, 2, 9)


# ----- (d) checkpoint across device counts -------------------------------------------------------------
TINY = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, n_kv_heads=2, head_dim=16, d_ff=64,
                   max_seq_len=64)


def _host(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def test_train_state_saved_on_4_devices_restores_bitwise_on_2_and_1(tmp_path: Path) -> None:
    opt = OptimizerConfig(lr=1e-3, warmup_steps=0, total_steps=10)
    mesh4 = make_mesh(MeshConfig(), devices=jax.devices()[:4])  # fsdp = 4
    state = create_train_state(TINY, opt, mesh4, jax.random.key(1))
    # move the Adam moments off zero so the optimizer state is checked too
    state = jax.tree.map(lambda x: x + 0.5 if jax.numpy.issubdtype(x.dtype, jax.numpy.floating) else x, state)
    sharded = [x for x in jax.tree.leaves(state.params) if len(x.sharding.device_set) == 4
               and not x.sharding.is_fully_replicated]
    assert sharded, "nothing was sharded over the 4-device fsdp mesh"
    want = _host(state)
    with Checkpointer(tmp_path / "ck") as ck:
        ck.save(3, state, extra={"iterator": {"next_index": 12}})
    for n in (2, 1):
        mesh = make_mesh(MeshConfig(), devices=jax.devices()[:n])
        shard = state_shardings(TINY, mesh, opt)
        abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                jax.eval_shape(lambda: state), shard)
        with Checkpointer(tmp_path / "ck") as ck:
            out = ck.restore_latest(abstract)
        assert out.step == 3 and out.extra["iterator"] == {"next_index": 12}
        for a, b in zip(want, _host(out.state)):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
        for leaf, s in zip(jax.tree.leaves(out.state), jax.tree.leaves(shard)):
            assert leaf.sharding == s and len(leaf.sharding.device_set) == n


# ----- the RL loop (slow) ------------------------------------------------------------------------------
COIN = ["tasks.env=coin_test", "tasks.env_modules=[vagent_jax.testing]"]
RL_BASE = COIN + ["tasks.num_tasks=8", "prompts_per_step=4", "group_size=2", "dynamic_sampling=false",
                  "engine.batch_slots=8", "engine.max_len=96", "engine.max_new_tokens=8", "engine.chunk_steps=8",
                  "num_devices=1", "env_workers=1", "save_every=1", "optimizer.lr=0.001",
                  "checkpoint.keep_last=10"]


@pytest.fixture(scope="module")
def policy_dir(coin_policy_dir: Path) -> Path:
    """Any small policy will do: conftest's coin SFT policy."""
    return coin_policy_dir


def _cfg(policy: Path, out: Path, *extra: str) -> RLConfig:
    return load_config(RLConfig, None, RL_BASE + [f"init_from={policy}", f"out_dir={out}",
                                                  f"tasks.data_dir={policy / 'data'}", *extra])


@pytest.fixture
def draws(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, list[dict]]]:
    """Every TaskIterator.take of the loop as (stream index of its first task, the tasks)."""
    log: list[tuple[int, list[dict]]] = []
    real = TaskIterator.take

    def take(self: TaskIterator, n: int) -> list[dict]:
        start = self.next_index
        tasks = real(self, n)
        log.append((start, tasks))
        return tasks

    monkeypatch.setattr(TaskIterator, "take", take)
    return log


@pytest.mark.slow  # three RL runs of 1-3 steps: about a minute on an idle 2-core machine
def test_rl_loop_resumes_in_order_mid_epoch_and_at_the_epoch_boundary(policy_dir: Path, tmp_path: Path,
                                                                      draws: list) -> None:
    run_rl(_cfg(policy_dir, tmp_path / "full", "steps=3"))
    uninterrupted = list(draws)
    assert [start for start, _ in uninterrupted] == [0, 4, 8]  # step 3 is the first of epoch 1
    draws.clear()
    cut = tmp_path / "cut"
    run_rl(_cfg(policy_dir, cut, "steps=1"))
    mid = run_rl(_cfg(policy_dir, cut, "steps=2"), resume=True)  # resumes at stream index 4, mid-epoch
    boundary = run_rl(_cfg(policy_dir, cut, "steps=3"), resume=True)  # resumes exactly at the epoch boundary
    assert (mid["resumed_from"], boundary["resumed_from"]) == (1, 2)
    assert [start for start, _ in draws] == [0, 4, 8], "the resumed runs drew other positions of the stream"
    assert [t for _, t in draws] == [t for _, t in uninterrupted]
    steps = [s for s, _ in read_jsonl_scalars(cut / "tb")["rollout/reward_mean"]]
    assert steps == [1, 2, 3], f"each resumed run must train its step (no run of 0 steps): {steps}"
    with Checkpointer(cut / "checkpoints") as ck:
        assert ck.latest_step() == 3


@pytest.mark.slow  # one RL run of 2 steps
def test_rl_loop_updates_per_batch_uses_each_row_once(policy_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    full, parts = [], []
    real_batch, real_step = rollout_batch.update_batch, rl_run.make_rl_step

    def update_batch(*args, **kwargs):
        out = real_batch(*args, **kwargs)
        full.append({k: v.copy() for k, v in out.items()})
        return out

    def make_rl_step(*args, **kwargs):
        step = real_step(*args, **kwargs)

        def recorded(state, batch, *rest):
            parts.append({k: np.asarray(v).copy() for k, v in batch.items()})
            return step(state, batch, *rest)

        return recorded

    kept_groups = iter([2, 1])  # step 1 keeps every group (rows 0-7), step 2 one group (rows 0-1 of 8)

    def keep_groups(rewards, group_size):
        keep = np.zeros(len(rewards) // group_size, bool)
        keep[: next(kept_groups)] = True
        return keep

    monkeypatch.setattr(rollout_batch, "update_batch", update_batch)
    monkeypatch.setattr(rl_run, "make_rl_step", make_rl_step)
    monkeypatch.setattr(dynamic_sampling, "keep_groups", keep_groups)
    run_rl(_cfg(policy_dir, tmp_path / "upb", "steps=2", "updates_per_batch=2", "dynamic_sampling=true",
                "max_rounds=1", "prompts_per_step=2", "group_size=4"))
    assert len(full) == 2 and len(parts) == 3, "step 2's second mini-batch is padding only: no update on it"
    used = [8, 4]
    by_step = [parts[:2], parts[2:]]
    for batch, mbs, n in zip(full, by_step, used):
        for key in batch:
            joined = np.concatenate([p[key] for p in mbs])
            np.testing.assert_array_equal(joined, batch[key][: len(joined)])  # in order, once each
        assert (batch["loss_mask"][:n].sum(1) > 0).all() and batch["loss_mask"][n:].sum() == 0
        for p in mbs:
            assert p["loss_mask"].sum() > 0
            # old_logp of every mini-batch is the pre-update policy: equal to the fp32 sampler's logprob
            m = p["loss_mask"] > 0
            np.testing.assert_allclose(p["old_logp"][m], p["rollout_logp"][m], atol=1e-4)


@pytest.mark.slow  # one RL step on 4 devices, a resumed step on 2
def test_rl_checkpoint_from_4_devices_resumes_on_2_and_1(policy_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dev"
    four = RLTrainer.from_config(_cfg(policy_dir, out, "steps=1", "num_devices=4"), resume=False)
    four.run()
    assert any(len(x.sharding.device_set) == 4 and not x.sharding.is_fully_replicated
               for x in jax.tree.leaves(four.state.params)), "the 4-device run sharded nothing"
    want = _host(four.state)
    for n in (1, 2):
        tr = RLTrainer.from_config(_cfg(policy_dir, out, "steps=2", f"num_devices={n}"), resume=True)
        assert tr.start == 1 and [s["next_index"] for s in tr.iterator.get_state()] == [4]
        got = _host(tr.state)
        assert all(a.tobytes() == b.tobytes() for a, b in zip(want, got))
        assert all(len(x.sharding.device_set) == n for x in jax.tree.leaves(tr.state.params))
        if n == 1:
            tr.ckpt.close()
    summary = tr.run()  # and the 2-device trainer goes on training from there
    assert summary["resumed_from"] == 1 and np.isfinite(summary["update/loss"])
