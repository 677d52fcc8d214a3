"""Task mixtures (config `tasks.mix`, `tasks.mix_schedule`): the entries, their member environments, and
the RL iterator that draws each step's prompts from per-member task sets by the step's weights.

An entry is {env, name, weight, final_weight, config (the env's arguments), difficulty, rubric}. The run's
environment is then `mix` (envs/mixture.py) over the entries. The schedule (rl/mix_schedule.py) sets the
weights each step; prompts per member = largest-remainder apportionment of prompts_per_step / K by the
weights, times K (K = the data shards), so every process draws the same share of every member.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, Sequence

from vagent_jax.config import config_scope, require
from vagent_jax.envs.rubric import CriterionConfig, check_rubric


@dataclasses.dataclass(frozen=True)
class MixEntry:
    """One environment of a mixture; `final_weight` (-1: = weight) is the hard end of a linear ramp."""

    env: str = ""
    name: str = ""  # metric tag env/<name>/...; default: env, or the reasoning-gym dataset
    weight: float = 1.0
    final_weight: float = -1.0
    config: dict[str, Any] = dataclasses.field(default_factory=dict)  # the environment's constructor arguments
    difficulty: int = 1
    rubric: tuple[CriterionConfig, ...] = ()

    @property
    def tag(self) -> str:
        """The entry's name: `name`, else the reasoning-gym dataset, else the env."""
        return self.name or (str(self.config["dataset"]) if self.env == "reasoning_gym" and "dataset" in self.config
                             else self.env)

    @property
    def end_weight(self) -> float:
        """The weight at the end of a linear ramp."""
        return self.weight if self.final_weight < 0 else self.final_weight

    def validate(self) -> None:
        """Env given, weights >= 0, difficulty >= 1, the rubric's criteria."""
        require(bool(self.env), "env", "each mixture entry names an environment")
        require(self.weight >= 0, "weight", f"must be >= 0, got {self.weight}")
        require(self.final_weight >= 0 or self.final_weight == -1.0, "final_weight",
                f"must be >= 0 (or -1: the same as weight), got {self.final_weight}")
        require(self.difficulty >= 1, "difficulty", f"must be >= 1, got {self.difficulty}")
        for i, c in enumerate(self.rubric):
            with config_scope(f"rubric[{i}]"):
                c.validate()
        check_rubric(self.rubric)


@dataclasses.dataclass(frozen=True)
class MixScheduleConfig:
    """How the mixture weights move: fixed; linear from `weight` to `final_weight` over `ramp_steps`; or
    pass_rate_band: weight x 1 where a member's measured pass rate lies in `band`, x `outside` elsewhere."""

    kind: Literal["fixed", "linear", "pass_rate_band"] = "fixed"
    ramp_steps: int = 100
    band: tuple[float, float] = (0.1, 0.9)
    outside: float = 0.1  # weight factor of a member whose pass rate is outside the band (> 0: keep measuring)
    ema: float = 0.5  # pass-rate smoothing: p <- ema * p + (1 - ema) * step pass rate

    def validate(self) -> None:
        """Ranges; errors name the key."""
        require(self.kind in ("fixed", "linear", "pass_rate_band"), "kind",
                f"{self.kind!r} is not one of ('fixed', 'linear', 'pass_rate_band')")
        require(self.ramp_steps >= 1, "ramp_steps", f"must be >= 1, got {self.ramp_steps}")
        lo, hi = self.band
        require(0 <= lo < hi <= 1, "band", f"must be 0 <= low < high <= 1, got {self.band}")
        require(0 < self.outside <= 1, "outside", f"must be in (0, 1], got {self.outside}")
        require(0 <= self.ema < 1, "ema", f"must be in [0, 1), got {self.ema}")


def check_mix(mix: Sequence[MixEntry], schedule: MixScheduleConfig) -> None:
    """Unique names, a positive start weight sum (and end sum for a ramp). Keys relative to `tasks`."""
    tags = [e.tag for e in mix]
    for i, t in enumerate(tags):
        require(tags.index(t) == i, f"mix[{i}].name", f"{t!r} names two entries: give each a distinct name")
    require(sum(e.weight for e in mix) > 0, "mix", "the entries' weights are all zero")
    if schedule.kind == "linear":
        require(sum(e.end_weight for e in mix) > 0, "mix", "the entries' final_weight values are all zero")


def member_specs(mix: Sequence[MixEntry]) -> list[dict[str, Any]]:
    """The `mix` environment's members: {name, env, args, weight, difficulty}; a rubric wraps its env."""
    out = []
    for e in mix:
        env, args = e.env, dict(e.config)
        if e.rubric:
            env, args = "rubric", {"env": e.env, "args": args, "criteria": [dataclasses.asdict(c) for c in e.rubric]}
        out.append({"name": e.tag, "env": env, "args": args, "weight": e.weight, "difficulty": e.difficulty})
    return out
