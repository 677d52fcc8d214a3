"""Tests for vagent_jax.data.task_pipeline: seeded order, exact resume, host shards, batching."""
import json

import pytest

from vagent_jax.data.task_pipeline import shard_bounds, task_batches, task_dataset, task_iterator
from vagent_jax.data.tfds_tasks import build_generated_tasks, load_generated_tasks

TASKS = [{"id": f"t{i}", "question": str(i)} for i in range(10)]


def ids(tasks):
    return [t["id"] for t in tasks]


def test_order_is_a_pure_function_of_seed_and_epochs_differ():
    a = ids(task_iterator(TASKS, seed=7, num_epochs=3, shard_index=0, shard_count=1))
    b = ids(task_iterator(TASKS, seed=7, num_epochs=3, shard_index=0, shard_count=1))
    c = ids(task_iterator(TASKS, seed=8, num_epochs=3, shard_index=0, shard_count=1))
    assert a == b and a != c and len(a) == 30
    epochs = [a[0:10], a[10:20], a[20:30]]
    assert all(sorted(e) == sorted(ids(TASKS)) for e in epochs)  # each epoch is a permutation
    assert epochs[0] != epochs[1]  # reshuffled per epoch
    unshuffled = ids(task_iterator(TASKS, seed=7, shuffle=False, num_epochs=2, shard_index=0, shard_count=1))
    assert unshuffled == ids(TASKS) * 2


@pytest.mark.parametrize("stop_at", [0, 3, 10, 17])
def test_restored_iterator_continues_the_uninterrupted_order(stop_at):
    kw = dict(seed=3, num_epochs=None, shard_index=0, shard_count=1)
    full = [next(it) for it in [task_iterator(TASKS, **kw)] for _ in range(30)]
    first = task_iterator(TASKS, **kw)
    head = [next(first) for _ in range(stop_at)]
    state = json.loads(json.dumps(first.get_state()))  # state survives JSON
    resumed = task_iterator(TASKS, **kw)
    resumed.set_state(state)
    assert ids(head + [next(resumed) for _ in range(30 - stop_at)]) == ids(full)


def test_state_at_epoch_boundary_resumes_into_next_epoch():
    kw = dict(seed=5, num_epochs=2, shard_index=0, shard_count=1)
    it = task_iterator(TASKS, **kw)
    first_epoch = [next(it) for _ in range(10)]
    state = it.get_state()
    assert it.epoch == 1
    resumed = task_iterator(TASKS, **kw)
    resumed.set_state(state)
    rest = list(resumed)
    assert len(rest) == 10 and sorted(ids(rest)) == sorted(ids(TASKS))
    assert ids(first_epoch + rest) == ids(task_iterator(TASKS, **kw))
    resumed.set_state(resumed.get_state())  # at the very end: nothing left, still valid
    assert list(resumed) == []


def test_two_host_shards_are_disjoint_and_cover_the_data():
    for n in (10, 11):
        tasks = TASKS + [{"id": "t10"}] if n == 11 else TASKS
        shards = [set(ids(task_iterator(tasks, seed=1, num_epochs=1, shard_index=k, shard_count=2))) for k in range(2)]
        assert not shards[0] & shards[1]
        assert shards[0] | shards[1] == set(ids(tasks))
    assert shard_bounds(11, 1, 2, drop_remainder=True) == (5, 10)
    with pytest.raises(ValueError, match="shard 0 of 3 is empty"):
        shard_bounds(2, 0, 3)


def test_set_state_rejects_other_pipelines_naming_the_key():
    it = task_iterator(TASKS, seed=1, shard_index=0, shard_count=2)
    other = task_iterator(TASKS, seed=2, shard_index=0, shard_count=2)
    with pytest.raises(ValueError, match="key 'seed': checkpoint has 2, this pipeline has 1"):
        it.set_state(other.get_state())
    with pytest.raises(ValueError, match="'next_index'"):
        it.set_state({**it.get_state(), "next_index": -1})
    with pytest.raises(ValueError, match="seed must be"):
        task_dataset(TASKS, seed=-1)


def test_batches_have_fixed_size_and_resume_between_batches():
    it = task_iterator(TASKS, seed=2, num_epochs=2, shard_index=0, shard_count=1)
    batches = list(task_batches(it, 3))
    assert [len(b) for b in batches] == [3] * 6  # 20 tasks -> 6 full batches, 2 dropped
    it2 = task_iterator(TASKS, seed=2, num_epochs=2, shard_index=0, shard_count=1)
    gen = task_batches(it2, 3)
    next(gen), next(gen)
    state = it2.get_state()
    it3 = task_iterator(TASKS, seed=2, num_epochs=2, shard_index=0, shard_count=1)
    it3.set_state(state)
    assert [ids(b) for b in task_batches(it3, 3)] == [ids(b) for b in batches[2:]]


def test_pipeline_reads_tfds_array_record_source(tmp_path):
    gen = lambda n, seed: [{"id": f"g{i}", "x": i} for i in range(n)]  # noqa: E731
    build_generated_tasks(gen, name="pipe", data_dir=tmp_path, splits={"train": (6, 0)})
    source = load_generated_tasks(tmp_path, "pipe", "train")
    shards = [ids(task_iterator(source, seed=4, num_epochs=1, shard_index=k, shard_count=2)) for k in range(2)]
    assert sorted(shards[0] + shards[1]) == sorted(f"g{i}" for i in range(6))
    assert ids(task_dataset(source, seed=4, num_epochs=1, shard_index=0, shard_count=1)) == ids(
        task_iterator(source, seed=4, num_epochs=1, shard_index=0, shard_count=1)
    )


def test_shard_defaults_come_from_the_jax_process():
    import jax

    it = task_iterator(TASKS, seed=0, num_epochs=1)
    state = it.get_state()
    assert (state["shard_index"], state["shard_count"]) == (jax.process_index(), jax.process_count())
    assert sorted(ids(it)) == sorted(ids(TASKS))  # a single process reads everything
