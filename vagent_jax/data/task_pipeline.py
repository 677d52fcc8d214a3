"""The grain task pipeline: per-host shard -> seeded per-epoch shuffle -> repeat, and a resumable iterator.

Order is a pure function of (seed, epoch, shard): grain's MapDataset.shuffle draws a fresh permutation
per epoch from seed + epoch, so element i of the stream is `dataset[i]` with no hidden state. The
iterator's whole state is therefore the next stream index (plus the pipeline identity, checked on
restore), a small JSON-serialisable dict that the trainer saves beside its checkpoint.

Sharding: host k of K reads the contiguous block [k*N//K, (k+1)*N//K) of the N records (blocks differ
in size by at most one); with drop_remainder every host reads N//K records, which keeps hosts in step
when epochs are finite.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grain
import jax

Task = dict[str, Any]


def shard_bounds(num_records: int, shard_index: int, shard_count: int, drop_remainder: bool = False) -> tuple[int, int]:
    """[start, stop) of host `shard_index`'s contiguous block of `num_records` records split K ways."""
    if shard_count < 1:
        raise ValueError(f"shard_count must be >= 1, got {shard_count}")
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index must be in [0, {shard_count}), got {shard_index}")
    if drop_remainder:
        size = num_records // shard_count
        start, stop = shard_index * size, (shard_index + 1) * size
    else:
        start = shard_index * num_records // shard_count
        stop = (shard_index + 1) * num_records // shard_count
    if stop <= start:
        raise ValueError(f"shard {shard_index} of {shard_count} is empty: only {num_records} task records")
    return start, stop


def task_dataset(
    source: Sequence[Task] | Any,
    *,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    drop_remainder: bool = False,
) -> grain.MapDataset:
    """A grain MapDataset of this host's task stream: shard, shuffle per epoch, repeat.

    source: anything with len() and integer indexing returning task dicts (a list from
    read_jsonl_tasks, a TfdsTaskSource). num_epochs=None repeats forever. shard_index/shard_count
    default to jax.process_index()/jax.process_count().
    """
    if not hasattr(source, "__len__") or not hasattr(source, "__getitem__"):
        raise ValueError(f"source must support len() and indexing, got {type(source).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    if num_epochs is not None and (isinstance(num_epochs, bool) or not isinstance(num_epochs, int) or num_epochs < 1):
        raise ValueError(f"num_epochs must be a positive integer or None (repeat forever), got {num_epochs!r}")
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
    if len(source) == 0:
        raise ValueError(f"source {source!r} holds no tasks")
    start, stop = shard_bounds(len(source), shard_index, shard_count, drop_remainder)
    ds = grain.MapDataset.source(source)[start:stop]
    if shuffle:
        ds = ds.shuffle(seed=seed)
    return ds.repeat(num_epochs)


class TaskIterator(Iterator[Task]):
    """Checkpointable iterator over a task MapDataset: element i of the stream is `dataset[i]`.

    get_state() -> {"next_index": i, **identity}; set_state() checks the identity (seed, shard, ...)
    matches this pipeline, naming the first key that differs, then resumes at exactly index i.
    """

    def __init__(self, dataset: grain.MapDataset, identity: Mapping[str, Any] | None = None, epoch_size: int | None = None) -> None:
        self._dataset = dataset
        self._length = len(dataset)
        self._identity = dict(identity or {})
        self._epoch_size = epoch_size
        self._next_index = 0

    @property
    def next_index(self) -> int:
        """How many tasks this iterator has produced since the start of the stream."""
        return self._next_index

    @property
    def epoch(self) -> int:
        """The epoch the next task belongs to (0-based); needs epoch_size."""
        if not self._epoch_size:
            raise ValueError("TaskIterator.epoch needs epoch_size (the shard's number of records)")
        return self._next_index // self._epoch_size

    def __iter__(self) -> TaskIterator:
        return self

    def __next__(self) -> Task:
        if self._next_index >= self._length:
            raise StopIteration
        task = self._dataset[self._next_index]
        self._next_index += 1
        return task

    def take(self, n: int) -> list[Task]:
        """The next n tasks as a list; StopIteration (nothing consumed) if fewer than n remain."""
        if n < 1:
            raise ValueError(f"batch size must be >= 1, got {n}")
        if self._length - self._next_index < n:
            raise StopIteration
        return [next(self) for _ in range(n)]

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable resume point: next stream index plus the pipeline identity."""
        return {"next_index": self._next_index, **self._identity}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Resume from get_state()'s dict; ValueError naming the key if it belongs to another pipeline."""
        if not isinstance(state, Mapping) or "next_index" not in state:
            raise ValueError(f"iterator state must be a dict with 'next_index', got {state!r}")
        for key, value in self._identity.items():
            if key not in state:
                raise ValueError(f"iterator state key {key!r} is missing (this pipeline has {value!r})")
            if state[key] != value:
                raise ValueError(f"iterator state key {key!r}: checkpoint has {state[key]!r}, this pipeline has {value!r}")
        index = state["next_index"]
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= self._length:
            raise ValueError(f"iterator state key 'next_index': {index!r} is outside [0, {self._length}]")
        self._next_index = index


def task_iterator(
    source: Sequence[Task] | Any,
    *,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    drop_remainder: bool = False,
) -> TaskIterator:
    """task_dataset(...) wrapped in a TaskIterator whose state records seed, shuffle and shard identity."""
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
    ds = task_dataset(
        source, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
        shard_index=shard_index, shard_count=shard_count, drop_remainder=drop_remainder,
    )
    start, stop = shard_bounds(len(source), shard_index, shard_count, drop_remainder)
    identity = {
        "seed": seed, "shuffle": shuffle, "num_epochs": num_epochs, "shard_index": shard_index,
        "shard_count": shard_count, "shard_size": stop - start, "num_records": len(source),
    }
    return TaskIterator(ds, identity, epoch_size=stop - start)


def task_batches(iterator: TaskIterator, batch_size: int) -> Iterator[list[Task]]:
    """Yield lists of exactly `batch_size` tasks (a trailing partial batch is dropped).

    The iterator's state read between two yielded batches resumes at the next batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    while True:
        try:
            batch = iterator.take(batch_size)
        except StopIteration:
            return
        yield batch
