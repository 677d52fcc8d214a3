"""reasoning-gym datasets that fault inside the scorer, registered on import (for worker-pool tests)."""
from __future__ import annotations

import dataclasses
import time
from typing import Any

from reasoning_gym.dataset import ProceduralDataset
from reasoning_gym.factory import DATASETS, register_dataset


@dataclasses.dataclass
class FixtureConfig:
    seed: int | None = None
    size: int = 10


class _Base(ProceduralDataset):
    def __init__(self, config: FixtureConfig) -> None:
        super().__init__(config=config, seed=config.seed, size=config.size)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return {"question": f"Say {idx}.", "answer": str(idx), "metadata": {"idx": idx}}


class RaisingDataset(_Base):
    def score_answer(self, answer: str | None, entry: dict[str, Any]) -> float:
        raise RuntimeError("scorer bug")


class SleepyDataset(_Base):
    def score_answer(self, answer: str | None, entry: dict[str, Any]) -> float:
        time.sleep(60)
        return 1.0


for _name, _cls in (("vagent_raising", RaisingDataset), ("vagent_sleepy", SleepyDataset)):
    if _name not in DATASETS:
        register_dataset(_name, _cls, FixtureConfig)
