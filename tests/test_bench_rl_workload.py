"""The benchmark's RL trainer is RLTrainer's own constructor over in-memory parts, so it holds every field
the loop reads: a whole `one_step` (mixture, entropy control, curriculum, NaN guard, logging) runs on it,
not only collect and update."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vagent_jax.bench_rl_workload import QUICK_SHAPE, build_trainer
from vagent_jax.train.metrics_writer import MetricsWriter, ProgressBar, read_scalars


def test_the_benchmark_trainer_runs_a_whole_loop_step(tmp_path: Path) -> None:
    trainer, pool, _ = build_trainer(QUICK_SHAPE)
    writer = MetricsWriter(tmp_path / "tb")
    bar = ProgressBar(1, keys=("reward", "pass_rate", "entropy", "step_time"), desc="rl", enabled=False)
    try:
        scalars = trainer.one_step(pool, 0, writer, bar)
    finally:
        writer.close()
    # dynamic sampling is off in the benchmark: one round, every prompt's group is trained on
    assert scalars["rollout/rounds"] == 1.0 and scalars["rollout/groups_kept"] == QUICK_SHAPE.prompts
    assert scalars["update/skipped_no_signal"] == 0.0 and np.isfinite(scalars["update/loss"])
    assert int(trainer.state.step) == 1 and trainer.guard.total == 0
    assert read_scalars(tmp_path / "tb")["rollout/rounds"] == [(1, 1.0)]
