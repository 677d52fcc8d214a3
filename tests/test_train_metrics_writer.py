"""MetricsWriter: TensorBoard + JSONL round trip, process-0 gating, purge on resume, progress bar, reduction."""
from __future__ import annotations

import io
import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator as ea

from vagent_jax.train.metrics_writer import (JSONL_NAME, MetricsWriter, ProgressBar, match_tag,
                                             read_jsonl_scalars, read_scalars, reduce_metric_pairs)


def test_scalars_round_trip_through_tensorboard_and_jsonl(tmp_path: Path) -> None:
    with MetricsWriter(tmp_path, process_index=0) as w:
        for step in range(3):
            w.write_scalars(step, {"rl/reward": 0.25 * step, "rl/entropy": jnp.float32(1.5 - step),
                                   "rl/tokens": np.int64(100 + step)})
        w.flush()
    want = {"rl/reward": [(0, 0.0), (1, 0.25), (2, 0.5)], "rl/entropy": [(0, 1.5), (1, 0.5), (2, -0.5)],
            "rl/tokens": [(0, 100.0), (1, 101.0), (2, 102.0)]}
    assert read_scalars(tmp_path) == want
    assert read_jsonl_scalars(tmp_path) == want


def test_histograms_are_written(tmp_path: Path) -> None:
    with MetricsWriter(tmp_path, process_index=0) as w:
        w.write_histogram(4, "rl/token_entropy", np.array([[0.1, 0.2], [0.3, np.nan]]))
        w.write_histogram(5, "rl/empty", np.array([np.inf]))
    acc = ea.EventAccumulator(str(tmp_path), size_guidance={ea.HISTOGRAMS: 0})
    acc.Reload()
    assert acc.Tags()[ea.HISTOGRAMS] == ["rl/token_entropy"]
    (event,) = acc.Histograms("rl/token_entropy")
    assert event.step == 4
    assert event.histogram_value.num == 3
    assert event.histogram_value.min == pytest.approx(0.1) and event.histogram_value.max == pytest.approx(0.3)


def test_only_process_zero_writes(tmp_path: Path) -> None:
    w = MetricsWriter(tmp_path / "p1", process_index=1)
    w.write_scalars(0, {"loss": 1.0})
    w.write_histogram(0, "h", [1.0, 2.0])
    w.close()
    assert not (tmp_path / "p1").exists()


def test_resume_purges_steps_after_the_checkpoint(tmp_path: Path) -> None:
    with MetricsWriter(tmp_path, process_index=0) as w:
        for step in range(5):
            w.write_scalars(step, {"loss": float(step)})
    with MetricsWriter(tmp_path, purge_step=3, process_index=0) as w:  # resumed from the step-2 checkpoint
        for step in range(3, 5):
            w.write_scalars(step, {"loss": 10.0 + step})
    want = [(0, 0.0), (1, 1.0), (2, 2.0), (3, 13.0), (4, 14.0)]
    assert read_jsonl_scalars(tmp_path)["loss"] == want
    assert read_scalars(tmp_path)["loss"] == want


def test_bad_values_and_files_name_the_fault(tmp_path: Path) -> None:
    with MetricsWriter(tmp_path, process_index=0) as w:
        with pytest.raises(ValueError, match="'rl/entropy' must be a scalar"):
            w.write_scalars(0, {"rl/entropy": np.zeros(3)})
        with pytest.raises(TypeError, match="'name' must be numeric"):
            w.write_scalars(0, {"name": "abc"})
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files"):
        read_scalars(tmp_path / "missing")
    (tmp_path / JSONL_NAME).write_text('{"step": 1, "scalars": {"a": 1}}\nnot json\n')
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl_scalars(tmp_path)


def test_reduce_metric_pairs_adds_first_and_divides_once() -> None:
    parts = [{"loss": (6.0, 3), "clip_frac": (1.0, 4)}, {"loss": (np.float32(4.0), jnp.int32(1))},
             {"loss": (0.0, 0), "clip_frac": (0.0, 0)}]
    out = reduce_metric_pairs(parts)
    assert out["loss"] == pytest.approx(10.0 / 4)  # not the mean of part means (2.0, 4.0) = 3.0
    assert out["clip_frac"] == pytest.approx(0.25)
    assert math.isnan(reduce_metric_pairs([{"x": (0.0, 0)}])["x"])
    with pytest.raises(ValueError, match="'loss' in part 0"):
        reduce_metric_pairs([{"loss": 1.0}])
    with pytest.raises(ValueError, match="negative count"):
        reduce_metric_pairs([{"loss": (1.0, -1)}])


def test_match_tag_prefers_exact_then_last_part() -> None:
    tags = ["rl/reward_mean", "rl/reward", "eval/pass_rate", "reward_std"]
    assert match_tag(tags, "reward") == "rl/reward"
    assert match_tag(["rl/reward_mean", "rl/entropy"], "reward") == "rl/reward_mean"
    assert match_tag(tags, "pass_rate") == "eval/pass_rate"
    assert match_tag(tags, "entropy") is None


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


METRICS = {"rl/reward_mean": 0.5, "rl/pass_rate": 0.25, "rl/entropy": 1.2345678, "perf/step_time": 3.0,
           "rl/loss": 9.0}


def test_progress_bar_shows_key_numbers_on_a_tty() -> None:
    tty = _Tty()
    bar = ProgressBar(total=10, stream=tty)
    bar.update(3, METRICS)
    bar.close()
    text = tty.getvalue()
    assert "3/10" in text
    for piece in ("reward=0.5", "pass_rate=0.25", "entropy=1.235", "step_time=3"):
        assert piece in text
    assert "loss" not in text
    off = _Tty()
    bar = ProgressBar(total=10, stream=off, enabled=False)
    bar.update(3, METRICS)
    bar.close()
    assert off.getvalue() == ""


def test_progress_off_a_tty_is_a_line_every_n_steps_and_at_the_end() -> None:
    piped = io.StringIO()
    bar = ProgressBar(total=7, stream=piped, desc="rl", line_every=3)
    for step in range(1, 8):
        bar.update(step, METRICS)
    bar.close()
    want = "reward=0.5 pass_rate=0.25 entropy=1.235 step_time=3"
    assert piped.getvalue().splitlines() == [f"rl step 3/7: {want}", f"rl step 6/7: {want}", f"rl step 7/7: {want}"]
    off = io.StringIO()
    bar = ProgressBar(total=7, stream=off, enabled=False, line_every=1)
    bar.update(1, METRICS)
    assert off.getvalue() == ""  # a non-primary process prints nothing
    with pytest.raises(ValueError, match="line_every"):
        ProgressBar(total=7, stream=off, line_every=0)
