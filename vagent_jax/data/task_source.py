"""Where a run's tasks come from (config section `tasks`): an environment's generator written to TFDS
array_record, or a JSONL file; plus the grain iterator over them and the held-out evaluation split.

Generated tasks go through TFDS (built once under `tasks.data_dir`, reused after) so training reads them
like any other on-disk task set: random access, per-host sharding, seeded shuffling, resumable position.
Held-out tasks use a disjoint seed (seed + 10_000) so training never sees them.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Literal, Sequence

from vagent_jax.config import require
from vagent_jax.data.jsonl_tasks import read_jsonl_tasks
from vagent_jax.data.task_pipeline import TaskIterator, task_iterator
from vagent_jax.data.tfds_tasks import build_generated_tasks, load_generated_tasks

EVAL_SEED_OFFSET = 10_000


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """The task set of a run: `source` generated (by env `env`) or jsonl (`path`, `eval_path`)."""

    env: str = "calculator"
    env_modules: tuple[str, ...] = ()  # modules whose import registers extra environments (plugins)
    source: Literal["generated", "jsonl"] = "generated"
    num_tasks: int = 2000  # generated: training tasks
    eval_tasks: int = 128  # generated: held-out tasks (a disjoint seed)
    difficulty: int = 1  # generated: the env generator's difficulty level
    path: str | None = None  # jsonl: training tasks
    eval_path: str | None = None  # jsonl: held-out tasks
    data_dir: str = "data/tasks"  # generated: where the TFDS array_record build lives
    seed: int = 0
    shuffle: bool = True

    def validate(self) -> None:
        """Check the source's required keys; errors name the key."""
        from vagent_jax.envs import env_names
        from vagent_jax.envs.registry import import_env_modules

        try:
            import_env_modules(self.env_modules)
        except ImportError as e:
            require(False, "tasks.env_modules", str(e))
        require(self.env in env_names(), "tasks.env", f"{self.env!r} is not one of {env_names()}")
        require(self.source in ("generated", "jsonl"), "tasks.source",
                f"{self.source!r} is not one of ('generated', 'jsonl')")
        if self.source == "generated":
            require(self.num_tasks > 0, "tasks.num_tasks", f"must be > 0, got {self.num_tasks}")
            require(self.eval_tasks >= 0, "tasks.eval_tasks", f"must be >= 0, got {self.eval_tasks}")
            require(self.difficulty >= 1, "tasks.difficulty", f"must be >= 1, got {self.difficulty}")
        else:
            require(bool(self.path), "tasks.path", "source 'jsonl' needs a JSONL file of tasks")
        require(0 <= self.seed < 2**32 - EVAL_SEED_OFFSET, "tasks.seed", f"out of range: {self.seed}")


@functools.lru_cache(maxsize=16)
def _generated(env: str, difficulty: int, n: int, seed: int, data_dir: str) -> Any:
    from vagent_jax.envs import get_env

    generator = get_env(env)
    name = f"{env}-d{difficulty}-s{seed}-n{n}".replace("_", "-")
    gen = lambda n_, seed_: generator.generate_tasks(n_, seed_, difficulty)  # noqa: E731
    gen.__qualname__ = f"{env}.generate_tasks"  # type: ignore[attr-defined]
    build_generated_tasks(gen, name=name, data_dir=data_dir, splits={"train": (n, seed)})
    return load_generated_tasks(data_dir, name, "train")


def train_tasks(cfg: TaskConfig) -> Sequence[dict]:
    """The training task source (len + integer indexing), built on first use for generated tasks."""
    if cfg.source == "jsonl":
        return read_jsonl_tasks(cfg.path)  # type: ignore[arg-type]
    return _generated(cfg.env, cfg.difficulty, cfg.num_tasks, cfg.seed, str(Path(cfg.data_dir).absolute()))


def eval_tasks(cfg: TaskConfig, n: int | None = None) -> list[dict]:
    """Held-out tasks: the first n (default tasks.eval_tasks) of a disjoint generated set, or eval_path."""
    if cfg.source == "jsonl":
        if not cfg.eval_path:
            raise ValueError("tasks.eval_path: evaluation on a JSONL task set needs a held-out JSONL file")
        tasks = read_jsonl_tasks(cfg.eval_path)
        return tasks if n is None else tasks[:n]
    from vagent_jax.envs import get_env

    count = cfg.eval_tasks if n is None else n
    if count <= 0:
        raise ValueError("tasks.eval_tasks: no held-out tasks configured (set it > 0)")
    return get_env(cfg.env).generate_tasks(count, cfg.seed + EVAL_SEED_OFFSET, cfg.difficulty)


def train_iterator(cfg: TaskConfig, seed: int | None = None) -> TaskIterator:
    """A grain iterator over this host's shard of the training tasks (seeded shuffle per epoch, repeats)."""
    return task_iterator(train_tasks(cfg), seed=cfg.seed if seed is None else seed, shuffle=cfg.shuffle)
