"""Where a run's tasks come from (config section `tasks`): an environment's generator written to TFDS
array_record, or a JSONL file; plus the grain iterator over them and the held-out evaluation split.

Generated tasks go through TFDS (built once under `tasks.data_dir`, reused after) so training reads them
like any other on-disk task set: random access, per-host sharding, seeded shuffling, resumable position.
Held-out tasks are generated with a seed of their own (seeds.Purpose.HELD_OUT_TASKS) and, with
`tasks.eval_unseen` (the default), filtered so that no held-out prompt is a training prompt (data/heldout.py).

Shards (`tasks.shards`, 0 = one per process): the training tasks are cut into K contiguous grain shards,
each with its own seeded shuffle. An RL step's prompt list is the concatenation, in shard order, of
prompts_per_step / K tasks from every shard; process p of P reads only shards [p*K/P, (p+1)*K/P), so the
processes' parts concatenated in process order are that same list. A single process with the same
`tasks.shards` therefore draws exactly the prompts a multi-host run draws.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Protocol, Sequence

from vagent_jax.config import ConfigError, config_scope, require
from vagent_jax.data.jsonl_tasks import read_jsonl_tasks
from vagent_jax.data.heldout import prompt_keys, unseen_tasks
from vagent_jax.data.mixture import MixEntry, MixScheduleConfig, check_mix, member_specs
from vagent_jax.data.task_pipeline import Task, task_iterator
from vagent_jax.data.tfds_tasks import build_generated_tasks, load_generated_tasks
from vagent_jax.envs.mixture import MEMBER_KEY, apportion
from vagent_jax.envs.rubric import CriterionConfig, check_rubric
from vagent_jax.seeds import Purpose, purpose_seed


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """The task set of a run: `source` generated (by env `env`) or jsonl (`path`, `eval_path`)."""

    env: str = "calculator"
    env_modules: tuple[str, ...] = ()  # modules whose import registers extra environments (plugins)
    # keyword arguments of the environment's constructor, e.g. {allow_unisolated: true} for `python`
    env_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: Literal["generated", "jsonl"] = "generated"
    num_tasks: int = 2000  # generated: training tasks
    eval_tasks: int = 128  # generated: held-out tasks (a seed of their own)
    eval_unseen: bool = True  # generated: held-out prompts never among the training tasks' (nor repeated)
    difficulty: int = 1  # generated: the env generator's difficulty level
    path: str | None = None  # jsonl: training tasks
    eval_path: str | None = None  # jsonl: held-out tasks
    data_dir: str = "data/tasks"  # generated: where the TFDS array_record build lives
    seed: int = 0
    shuffle: bool = True
    shards: int = 0  # grain shards of the training tasks; 0 = one per process (see ShardedTaskIterator)
    # a mixture of environments (then env/env_args are unused): [{env, name, weight, final_weight, config,
    # difficulty, rubric}], weights moved by mix_schedule (data/mixture.py)
    mix: tuple[MixEntry, ...] = ()
    mix_schedule: MixScheduleConfig = MixScheduleConfig()
    rubric: tuple[CriterionConfig, ...] = ()  # criteria that reward tasks.env's trajectories (envs/rubric.py)

    @property
    def env_name(self) -> str:
        """The registered environment a run builds: `mix`, `rubric` (env + tasks.rubric) or tasks.env."""
        return "mix" if self.mix else "rubric" if self.rubric else self.env

    @property
    def env_kwargs(self) -> dict[str, Any]:
        """The constructor arguments of env_name (the workers build the same environment from them)."""
        if self.mix:
            return {"members": member_specs(self.mix)}
        if self.rubric:
            return {"env": self.env, "args": dict(self.env_args),
                    "criteria": [dataclasses.asdict(c) for c in self.rubric]}
        return dict(self.env_args)

    def validate(self) -> None:
        """Check the source's required keys; errors name the key."""
        from vagent_jax.envs import env_names, get_env
        from vagent_jax.envs.registry import import_env_modules

        try:
            import_env_modules(self.env_modules)
        except ImportError as e:
            require(False, "env_modules", str(e))
        if self.mix:
            self._validate_mix(env_names())
        else:
            require(self.env in env_names(), "env", f"{self.env!r} is not one of {env_names()}")
            for i, c in enumerate(self.rubric):
                with config_scope(f"rubric[{i}]"):
                    c.validate()
            check_rubric(self.rubric)
            try:  # the environment is built once here, so bad arguments (or a refusal) stop the load
                with config_scope("env_args"):
                    get_env(self.env, **self.env_args)
            except TypeError as e:
                raise ConfigError.at("env_args", str(e)) from None
        require(self.source in ("generated", "jsonl"), "source",
                f"{self.source!r} is not one of ('generated', 'jsonl')")
        if self.source == "generated":
            require(self.num_tasks > 0, "num_tasks", f"must be > 0, got {self.num_tasks}")
            require(self.eval_tasks >= 0, "eval_tasks", f"must be >= 0, got {self.eval_tasks}")
            require(self.difficulty >= 1, "difficulty", f"must be >= 1, got {self.difficulty}")
        else:
            require(bool(self.path), "path", "source 'jsonl' needs a JSONL file of tasks")
        require(0 <= self.seed < 2**32, "seed", f"out of range: {self.seed}")
        require(self.shards >= 0, "shards", f"must be >= 0 (0 = one per process), got {self.shards}")


    def _validate_mix(self, known: list[str]) -> None:
        """Each entry's env exists and builds with its config (errors name mix[i].key), weights, names."""
        from vagent_jax.envs import get_env

        require(not self.rubric, "rubric", "with tasks.mix, give each entry its own rubric (mix[i].rubric)")
        for i, e in enumerate(self.mix):
            with config_scope(f"mix[{i}]"):
                e.validate()
                require(e.env in known, "env", f"{e.env!r} is not one of {known}")
                try:
                    with config_scope("config"):
                        get_env(e.env, **e.config)  # built once: bad arguments stop the load
                except TypeError as err:
                    raise ConfigError.at("config", str(err)) from None
        check_mix(self.mix, self.mix_schedule)
        with config_scope("mix_schedule"):
            self.mix_schedule.validate()


def make_env(cfg: TaskConfig) -> Any:
    """The run's environment: `tasks.env` built with `tasks.env_args` (or the mixture / rubric over it)."""
    from vagent_jax.envs import get_env

    return get_env(cfg.env_name, **cfg.env_kwargs)


@functools.lru_cache(maxsize=16)
def _generated(env: str, difficulty: int, n: int, seed: int, data_dir: str, env_args_json: str = "{}") -> Any:
    from vagent_jax.envs import get_env

    generator = get_env(env, **json.loads(env_args_json))
    # the build directory is keyed by a fingerprint of the generator's output too, so a changed generator
    # builds a new dataset instead of silently reusing tasks of the old one
    probe = json.dumps(generator.generate_tasks(4, seed, difficulty), sort_keys=True)
    fingerprint = hashlib.sha256(probe.encode()).hexdigest()[:10]
    name = f"{env}-d{difficulty}-s{seed}-n{n}-{fingerprint}".replace("_", "-")
    gen = lambda n_, seed_: generator.generate_tasks(n_, seed_, difficulty)  # noqa: E731
    gen.__qualname__ = f"{env}.generate_tasks"  # type: ignore[attr-defined]
    build_generated_tasks(gen, name=name, data_dir=data_dir, splits={"train": (n, seed)})
    return load_generated_tasks(data_dir, name, "train")


def train_tasks(cfg: TaskConfig) -> Sequence[dict]:
    """The training task source (len + integer indexing), built on first use for generated tasks."""
    if cfg.source == "jsonl":
        return read_jsonl_tasks(cfg.path)  # type: ignore[arg-type]
    return _generated(cfg.env_name, cfg.difficulty, cfg.num_tasks, cfg.seed, str(Path(cfg.data_dir).absolute()),
                      json.dumps(cfg.env_kwargs, sort_keys=True))


def eval_tasks(cfg: TaskConfig, n: int | None = None) -> list[dict]:
    """Held-out tasks: the first n (default tasks.eval_tasks) of a disjoint generated set, or eval_path."""
    if cfg.source == "jsonl":
        if not cfg.eval_path:
            raise ValueError("tasks.eval_path: evaluation on a JSONL task set needs a held-out JSONL file")
        tasks = read_jsonl_tasks(cfg.eval_path)
        return tasks if n is None else tasks[:n]
    count = cfg.eval_tasks if n is None else n
    if count <= 0:
        raise ValueError("tasks.eval_tasks: no held-out tasks configured (set it > 0)")
    seed, env = purpose_seed(cfg.seed, Purpose.HELD_OUT_TASKS), make_env(cfg)
    # a mixture draws equal shares, so every member's held-out pass@1 has the same number of tasks
    draw = lambda n_: env.generate_tasks(n_, seed, cfg.difficulty, **({"even": True} if cfg.mix else {}))  # noqa: E731
    if not cfg.eval_unseen:
        return draw(count)
    shares = dict(zip([m["name"] for m in member_specs(cfg.mix)], apportion(count, [1.0] * len(cfg.mix)))) \
        if cfg.mix else {None: count}
    return unseen_tasks(env, draw, shares, prompt_keys(env, training_task_sets(cfg)))


def training_task_sets(cfg: TaskConfig) -> list[Sequence[dict]]:
    """Every task set a run trains on: the training tasks (SFT's demonstrations come from them) and, for a
    mixture, each member's RL task set (first curriculum level), tagged with the member's name."""
    sets: list[Sequence[dict]] = [train_tasks(cfg)]
    if cfg.mix:
        from vagent_jax.data.mixture_iterator import member_task_configs

        for name, member in member_task_configs(cfg).items():
            source = train_tasks(member)
            sets.append([dict(source[i], **{MEMBER_KEY: name}) for i in range(len(source))])
    return sets


class TaskStream(Protocol):
    """What the RL loop reads of a task stream (ShardedTaskIterator, MixtureTaskIterator)."""

    def first_index(self, n: int) -> int:
        """Index, in the step's list of n prompts, of this process's first prompt."""

    def take(self, n: int) -> list[Task]:
        """This process's part of the next n prompts."""

    def get_state(self) -> Any:
        """The position to checkpoint."""

    def set_state(self, states: Any) -> None:
        """Resume from a checkpointed position."""


class ShardedTaskIterator:
    """This process's part of every step's prompts: tasks from its own grain shards, in shard order.

    shards K (0 = process_count) must be a multiple of process_count P; process p owns shards
    [p*K/P, (p+1)*K/P). take(n) draws n/K tasks from each owned shard, so the parts of all processes,
    concatenated in process order, are the step's list of n prompts (module docstring).
    """

    def __init__(self, cfg: TaskConfig, process_index: int = 0, process_count: int = 1) -> None:
        shards = cfg.shards or process_count
        require(shards % process_count == 0, "tasks.shards",
                f"{shards} shards do not split evenly over {process_count} processes")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} is outside [0, {process_count})")
        self.shards, self.per_process = shards, shards // process_count
        self.owned = list(range(process_index * self.per_process, (process_index + 1) * self.per_process))
        source = train_tasks(cfg)
        self._its = [task_iterator(source, seed=cfg.seed, shuffle=cfg.shuffle, shard_index=k, shard_count=shards)
                     for k in self.owned]

    def local_count(self, n: int) -> int:
        """How many of a step's n prompts this process draws (n must be a multiple of the shard count)."""
        require(n % self.shards == 0, "prompts_per_step",
                f"{n} prompts do not split evenly over tasks.shards={self.shards} data shards")
        return n // self.shards * self.per_process

    def first_index(self, n: int) -> int:
        """Index, in the step's list of n prompts, of this process's first prompt."""
        return n // self.shards * self.owned[0]

    def take(self, n: int) -> list[Task]:
        """This process's part of the next n prompts: n/K tasks from each owned shard, in shard order."""
        per = self.local_count(n) // self.per_process
        return [t for it in self._its for t in it.take(per)]

    def get_state(self) -> list[dict[str, Any]]:
        """The owned shards' iterator states, in shard order."""
        return [it.get_state() for it in self._its]

    def set_state(self, states: Sequence[dict[str, Any]] | dict[str, Any]) -> None:
        """Resume from the states of ALL K shards (in shard order; a single state dict when K == 1)."""
        if isinstance(states, dict):
            states = [states]
        if len(states) != self.shards:
            raise ValueError(f"iterator state holds {len(states)} shard(s), this run reads tasks.shards={self.shards}")
        for k, it in zip(self.owned, self._its):
            it.set_state(states[k])
