"""A pass-rate curriculum: train on the easiest difficulty level first and move to the next one when
the rolling pass rate over the last `window` steps reaches `promote_at` (config section `curriculum`).

The state (level index and the recent pass rates) is a small JSON dict saved in the checkpoint, so a
resumed run promotes at exactly the step the uninterrupted one would.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from vagent_jax.config import require


@dataclasses.dataclass(frozen=True)
class CurriculumConfig:
    """levels: the environment difficulty levels in order (empty = off: tasks.difficulty throughout)."""

    levels: tuple[int, ...] = ()
    promote_at: float = 0.7
    window: int = 5

    def validate(self) -> None:
        """Ranges; errors name the key."""
        require(all(lv >= 1 for lv in self.levels), "levels", f"levels must be >= 1, got {self.levels}")
        require(list(self.levels) == sorted(set(self.levels)), "levels",
                f"levels must be strictly increasing (easy to hard), got {self.levels}")
        require(0 < self.promote_at <= 1, "promote_at", f"must be in (0, 1], got {self.promote_at}")
        require(self.window >= 1, "window", f"must be >= 1, got {self.window}")


class Curriculum:
    """Tracks the level; `observe(pass_rate)` returns True when the run moves to the next level."""

    def __init__(self, cfg: CurriculumConfig, state: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.index = int(state["index"]) if state else 0
        self.recent: list[float] = [float(x) for x in state["recent"]] if state else []

    @property
    def enabled(self) -> bool:
        """False when no levels are configured."""
        return bool(self.cfg.levels)

    @property
    def level(self) -> int | None:
        """The current difficulty level (None when disabled)."""
        return self.cfg.levels[self.index] if self.enabled else None

    def observe(self, pass_rate: float) -> bool:
        """Record one step's pass rate; promote (and clear the window) when the rolling mean is high enough."""
        if not self.enabled or self.index == len(self.cfg.levels) - 1:
            return False
        self.recent = (self.recent + [float(pass_rate)])[-self.cfg.window:]
        if len(self.recent) == self.cfg.window and sum(self.recent) / self.cfg.window >= self.cfg.promote_at:
            self.index += 1
            self.recent = []
            return True
        return False

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state for the checkpoint."""
        return {"index": self.index, "recent": list(self.recent)}
