"""Evidence-based SFT stopping: pass@1 on a validation slice every N steps, stop when it stops improving.

The validation tasks are the last `validation.tasks` training tasks, held out of the demonstrations, so the
held-out evaluation set (tasks.eval_tasks) is never used to pick the SFT step. Every evaluation samples
the same tasks with the same seed (common random numbers), so two points of the curve differ by the
policy, not by the sampling noise. The decision is a pure function of the curve: with a curve restored
from a checkpoint a resumed run stops at the same step as the uninterrupted one. The SFT job
(jobs/sft.py, `validation_pass_rate`) measures each point through the engine and the environment.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax

from vagent_jax.config import config_scope, require
from vagent_jax.engine import EngineConfig

ValidationPoint = tuple[int, float]  # (SFT step, validation pass@1)


@dataclasses.dataclass(frozen=True)
class SFTValidationConfig:
    """`validation.*` of an SFT recipe. every = 0 trains exactly `steps` steps (no validation); otherwise
    `steps` is the cap and the run stops at the first evaluation, at or after min_steps, that ends
    `patience` evaluations in a row without an improvement of more than min_delta over the best so far,
    once the best exceeds min_pass_rate (a policy that has learned nothing yet keeps training: a flat zero
    is a plateau before the skill forms, not the end of learning)."""

    every: int = 0
    tasks: int = 64
    patience: int = 2
    min_steps: int = 0
    min_delta: float = 0.0
    min_pass_rate: float = 0.0
    env_workers: int = 2
    engine: EngineConfig = EngineConfig(batch_slots=64, max_len=192, max_new_tokens=48, chunk_steps=16)

    def validate(self) -> None:
        """Ranges; errors name the key."""
        require(self.every >= 0, "every", f"must be >= 0 (0 = no validation), got {self.every}")
        require(self.tasks >= 1, "tasks", f"must be >= 1, got {self.tasks}")
        require(self.patience >= 1, "patience", f"must be >= 1, got {self.patience}")
        require(self.min_steps >= 0, "min_steps", f"must be >= 0, got {self.min_steps}")
        require(0.0 <= self.min_delta < 1.0, "min_delta", f"must be in [0, 1), got {self.min_delta}")
        require(0.0 <= self.min_pass_rate < 1.0, "min_pass_rate", f"must be in [0, 1), got {self.min_pass_rate}")
        require(self.env_workers >= 1, "env_workers", f"must be >= 1, got {self.env_workers}")


def should_stop(curve: Sequence[ValidationPoint], cfg: SFTValidationConfig) -> bool:
    """True when the newest point is at or past min_steps, the best earlier point exceeds min_pass_rate,
    and the last `patience` points all fail to beat that best by more than min_delta."""
    if len(curve) <= cfg.patience or curve[-1][0] < cfg.min_steps:
        return False
    best_before = max(rate for _, rate in curve[:-cfg.patience])
    return best_before > cfg.min_pass_rate and all(rate <= best_before + cfg.min_delta
                                                    for _, rate in curve[-cfg.patience:])


def check_validation_setup(cfg: SFTValidationConfig, demos: str, num_tasks: int, vocab_size: int,
                           max_seq_len: int) -> None:
    """Refuse validation settings that cannot work, before any training."""
    if not cfg.every:
        return
    require(demos == "env", "validation.every", "validation holds tasks out of env demonstrations; "
            "with demos 'jsonl' set validation.every=0")
    require(cfg.tasks < num_tasks, "validation.tasks", f"{cfg.tasks} leaves no training task of {num_tasks}")
    require(jax.process_count() == 1, "validation.every",
            f"validation runs on one process; this run has {jax.process_count()}")
    require(cfg.engine.max_len <= max_seq_len, "validation.engine.max_len",
            f"{cfg.engine.max_len} exceeds model.max_seq_len {max_seq_len}")
    with config_scope("validation.engine"):
        cfg.engine.validate(vocab_size)
