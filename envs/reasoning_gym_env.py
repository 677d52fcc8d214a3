"""reasoning-gym datasets as environments: any procedural dataset by name, or a weighted composite.

The prompt is the dataset's question, the answer the last <answer> block (as the other environments),
and the verifier the dataset's own `score_answer` (run in the env worker, bounded by verify_timeout_s; a
raising scorer costs one trajectory as `verifier_error`). The score is the reward (reasoning-gym gives
partial credit); `correct` means score >= pass_threshold.

Tasks are reproducible everywhere: the dataset seed is derived from (dataset, seed, difficulty) with a
hash that does not depend on the process. Difficulty d sets the dataset's config knobs: knobs of its
reasoning-gym curriculum at global level d - 1, then `config` on top (fixed knobs), then `levels[d - 1]`
(explicit knobs per difficulty), so the pass-rate curriculum (`curriculum.levels`) drives them.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import random
from typing import Any, Mapping, Sequence

from vagent_jax.config import ConfigError
from vagent_jax.envs.base import Environment, Message
from vagent_jax.envs.registry import register_env


def _rg() -> Any:
    import reasoning_gym  # imported on first use: ~2 s, paid only by runs that use it

    return reasoning_gym


def dataset_names() -> list[str]:
    """Every dataset reasoning-gym registers (its composite wrapper excluded)."""
    from reasoning_gym.factory import DATASETS

    _rg()
    return sorted(n for n in DATASETS if n != "composite")


def check_dataset_name(name: Any, key: str) -> str:
    """`name` when reasoning-gym has it, else a ConfigError at `key` listing the closest names."""
    names = dataset_names()
    if not isinstance(name, str) or name not in names:
        close = difflib.get_close_matches(str(name), names, n=5, cutoff=0.5)
        hint = f"closest: {close}" if close else f"{len(names)} datasets, e.g. {names[:8]}"
        raise ConfigError.at(key, f"{name!r} is not a reasoning-gym dataset ({hint})")
    return name


def knob_names(name: str) -> list[str]:
    """The config fields of a dataset (its difficulty and content knobs; seed and size are ours)."""
    from reasoning_gym.factory import DATASETS

    return sorted(f.name for f in dataclasses.fields(DATASETS[name][1]) if f.name not in ("seed", "size"))


def check_knobs(name: str, knobs: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A copy of `knobs` when every one is a field of the dataset's config, else a ConfigError naming it."""
    if not isinstance(knobs, Mapping):
        raise ConfigError.at(key, f"expected a mapping of {name} config knobs, got {knobs!r}")
    known = knob_names(name)
    for k in knobs:
        if k not in known:
            raise ConfigError.at(f"{key}.{k}", f"dataset {name!r} has no config knob {k!r} (knobs: {known})")
    return dict(knobs)


def curriculum_knobs(name: str, difficulty: int) -> dict[str, Any]:
    """The knobs of reasoning-gym's curriculum for `name` at global level difficulty - 1 ({} at level 1
    when the dataset has no curriculum); a level past the curriculum's last is a ValueError."""
    from reasoning_gym.factory import CURRICULA

    if name not in CURRICULA:
        if difficulty != 1:
            raise ValueError(f"dataset {name!r} has no reasoning-gym curriculum: difficulty must be 1 "
                             f"(or give env_args.levels), got {difficulty}")
        return {}
    cur = CURRICULA[name]()
    top = max(len(a.levels) for a in cur.attributes.values())
    if not 1 <= difficulty <= top:
        raise ValueError(f"dataset {name!r}: difficulty must be in [1, {top}] (its curriculum levels), got {difficulty}")
    cur.set_global_level(difficulty - 1)
    full = dataclasses.asdict(cur.generate_configuration({}))
    fields = set()
    for a in cur.attributes.values():
        fields.update(getattr(a, f) for f in ("field_name", "lower_field_name", "upper_field_name") if hasattr(a, f))
    return {k: v for k, v in full.items() if k in fields}


def derived_seed(*parts: Any) -> int:
    """A 32-bit seed from the parts, the same in every process (no Python hash randomisation)."""
    return int.from_bytes(hashlib.sha256(json.dumps(parts).encode()).digest()[:4], "little")


@dataclasses.dataclass(frozen=True)
class _Part:
    name: str
    weight: float
    config: dict[str, Any]


def _parts(dataset: str | None, config: Mapping[str, Any] | None,
           composite: Sequence[Mapping[str, Any]] | None) -> list[_Part]:
    """The datasets of the environment: one (`dataset`, `config`) or the `composite` list, all checked."""
    if (dataset is None) == (composite is None):
        raise ConfigError.at("dataset", "give exactly one of dataset (a name) or composite (a list of "
                                        "{dataset, weight, config})", related=("composite",))
    if dataset is not None:
        name = check_dataset_name(dataset, "dataset")
        return [_Part(name, 1.0, check_knobs(name, config or {}, "config"))]
    if config:
        raise ConfigError.at("config", "with composite, give each dataset's config in its entry")
    if not isinstance(composite, Sequence) or not composite:
        raise ConfigError.at("composite", f"expected a non-empty list of {{dataset, weight, config}}, got {composite!r}")
    parts = []
    for i, entry in enumerate(composite):
        key = f"composite[{i}]"
        if not isinstance(entry, Mapping) or set(entry) - {"dataset", "weight", "config"} or "dataset" not in entry:
            raise ConfigError.at(key, f"expected {{dataset, weight, config}}, got {entry!r}")
        name = check_dataset_name(entry["dataset"], f"{key}.dataset")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise ConfigError.at(f"{key}.weight", f"must be a number > 0, got {weight!r}")
        parts.append(_Part(name, float(weight), check_knobs(name, entry.get("config") or {}, f"{key}.config")))
    if len({p.name for p in parts}) != len(parts):
        raise ConfigError.at("composite", f"a dataset appears twice: {[p.name for p in parts]}")
    return parts


@register_env("reasoning_gym")
class ReasoningGymEnv(Environment):
    """Single-turn reasoning-gym tasks: <answer>ANSWER</answer>, scored by the dataset's score_answer."""

    name = "reasoning_gym"
    max_turns = 1
    system_prompt = "Answer the question. Give only the final answer as <answer>ANSWER</answer>."

    def __init__(self, dataset: str | None = None, config: Mapping[str, Any] | None = None,
                 composite: Sequence[Mapping[str, Any]] | None = None,
                 levels: Sequence[Mapping[str, Any]] | None = None, pass_threshold: float = 1.0,
                 verify_timeout_s: float = 5.0, max_turns: int | None = None) -> None:
        self.parts = _parts(dataset, config, composite)
        if levels is not None and len(self.parts) != 1:
            raise ConfigError.at("levels", "levels (knobs per difficulty) apply to a single dataset, not a composite")
        self.levels = [check_knobs(self.parts[0].name, lv, f"levels[{i}]") for i, lv in enumerate(levels or [])]
        if isinstance(pass_threshold, bool) or not 0 < float(pass_threshold) <= 1:
            raise ConfigError.at("pass_threshold", f"must be in (0, 1], got {pass_threshold!r}")
        if not float(verify_timeout_s) > 0:
            raise ConfigError.at("verify_timeout_s", f"must be > 0, got {verify_timeout_s!r}")
        self.pass_threshold, self.verify_timeout_s = float(pass_threshold), float(verify_timeout_s)
        self._scorers: dict[tuple[str, int], Any] = {}
        super().__init__(max_turns)
        for p in self.parts:  # build each dataset once so a bad knob value stops here, not in a worker
            self._dataset(p, 1, seed=0, size=1)

    def knobs(self, part: _Part, difficulty: int) -> dict[str, Any]:
        """The config knobs of `part` at `difficulty` (module docstring: curriculum, config, levels)."""
        if self.levels:
            if not 1 <= difficulty <= len(self.levels):
                raise ValueError(f"reasoning_gym {part.name}: difficulty must be in [1, {len(self.levels)}] "
                                 f"(env_args.levels), got {difficulty}")
            base = {}
        else:
            base = curriculum_knobs(part.name, difficulty)
        extra = self.levels[difficulty - 1] if self.levels else {}
        return {**base, **part.config, **extra}

    def _dataset(self, part: _Part, difficulty: int, seed: int, size: int) -> Any:
        knobs = self.knobs(part, difficulty)
        try:
            return _rg().create_dataset(part.name, **knobs, seed=seed, size=size)
        except (AssertionError, ValueError, TypeError) as e:
            raise ConfigError.at("config", f"dataset {part.name!r} refuses the knobs {knobs}: "
                                           f"{type(e).__name__}: {e}") from None

    def generate_tasks(self, n: int, seed: int, difficulty: int = 1) -> list[dict]:
        """n tasks {dataset, difficulty, question, answer, metadata}; composite datasets drawn by weight
        with a per-index generator, each dataset's items generated by its own seed."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"reasoning_gym: n must be a non-negative int, got {n!r}")
        sets = [self._dataset(p, difficulty, derived_seed(p.name, seed, difficulty), max(n, 1)) for p in self.parts]
        weights = [p.weight for p in self.parts]
        tasks = []
        for i in range(n):
            k = random.Random(derived_seed("pick", seed, difficulty, i)).choices(range(len(sets)), weights)[0]
            item = sets[k][i]
            metadata = json.loads(json.dumps(item.get("metadata", {}), default=str))
            tasks.append({"dataset": self.parts[k].name, "difficulty": difficulty, "question": str(item["question"]),
                          "answer": str(item["answer"]), "metadata": metadata})
        return tasks

    def prompt(self, task: Mapping[str, Any]) -> str:
        return str(task["question"])

    def _scorer(self, task: Mapping[str, Any]) -> Any:
        key = (str(task["dataset"]), int(task.get("difficulty", 1)))
        if key not in self._scorers:
            part = next((p for p in self.parts if p.name == key[0]), None)
            if part is None:
                raise ValueError(f"task of dataset {key[0]!r} is not one of {[p.name for p in self.parts]}")
            self._scorers[key] = self._dataset(part, key[1], seed=0, size=1)
        return self._scorers[key]

    def verify(self, task: Mapping[str, Any], answer: str) -> tuple[bool, dict]:
        """The dataset's score_answer on the extracted answer; the score is the reward."""
        entry = {"question": task["question"], "answer": task["answer"], "metadata": dict(task.get("metadata", {}))}
        score = float(self._scorer(task).score_answer(answer, entry))
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"{task['dataset']}.score_answer returned {score}, outside [0, 1]")
        return score >= self.pass_threshold, {"score": score, "dataset": task["dataset"]}

    def demonstration(self, task: Mapping[str, Any]) -> list[Message]:
        return self.initial_messages(task) + [Message("assistant", f"<answer>{task['answer']}</answer>")]
