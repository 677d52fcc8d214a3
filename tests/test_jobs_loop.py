"""The step loop SFT and RL share: checkpoint cadence, early stop, the final save, the interrupt save."""
from __future__ import annotations

import pytest

from vagent_jax.jobs.loop import run_steps


class Recorder:
    """A fake run: records the steps and saves, stops after step `stop_at`, raises inside step `interrupt_at`
    or inside the stop check after step `interrupt_check_at`."""

    def __init__(self, stop_at: int | None = None, interrupt_at: int | None = None,
                 interrupt_check_at: int | None = None) -> None:
        self.stop_at, self.interrupt_at, self.interrupt_check_at = stop_at, interrupt_at, interrupt_check_at
        self.steps: list[int] = []
        self.saves: list[tuple[int, bool]] = []

    def step(self, s: int) -> None:
        if s == self.interrupt_at:
            raise KeyboardInterrupt
        self.steps.append(s)

    def check(self, done: int) -> bool:
        if done == self.interrupt_check_at:
            raise KeyboardInterrupt
        return done == self.stop_at

    def save(self, s: int, force: bool) -> None:
        self.saves.append((s, force))

    def latest(self) -> int | None:
        return self.saves[-1][0] if self.saves else None


def test_saves_every_n_and_once_at_the_end():
    r = Recorder()
    assert run_steps(0, 7, r.step, r.save, check_stop=r.check, save_every=3, latest_saved=r.latest) == 7
    assert r.steps == list(range(7))
    assert r.saves == [(3, False), (6, False), (7, True)]


def test_the_last_step_is_saved_once_even_on_the_cadence():
    r = Recorder()
    run_steps(0, 6, r.step, r.save, check_stop=r.check, save_every=3, latest_saved=r.latest)
    assert r.saves == [(3, False), (6, True)]


def test_early_stop_saves_the_stop_step_without_a_cadence_save():
    r = Recorder(stop_at=6)
    assert run_steps(0, 10, r.step, r.save, check_stop=r.check, save_every=3, latest_saved=r.latest) == 6
    assert r.steps == list(range(6)) and r.saves == [(3, False), (6, True)]


def test_resumed_finished_or_stopped_run_takes_no_step_and_saves_nothing_new():
    r = Recorder()
    r.saves.append((5, True))  # the checkpoint the run resumed from
    assert run_steps(5, 5, r.step, r.save, check_stop=r.check, save_every=2, latest_saved=r.latest) == 5
    assert run_steps(5, 9, r.step, r.save, check_stop=r.check, save_every=2, latest_saved=r.latest, stopped=True) == 5
    assert r.steps == [] and r.saves == [(5, True)]


def test_interrupt_saves_what_is_done_and_reraises():
    r = Recorder(interrupt_at=4)
    with pytest.raises(KeyboardInterrupt):
        run_steps(2, 9, r.step, r.save, check_stop=r.check, save_every=100, latest_saved=r.latest)
    assert r.steps == [2, 3] and r.saves == [(4, True)]


def test_interrupt_inside_the_stop_check_saves_that_step():
    """SFT's validation runs after its step is done: a Ctrl-C there resumes after the step, not before it."""
    r = Recorder(interrupt_check_at=4)
    with pytest.raises(KeyboardInterrupt):
        run_steps(2, 9, r.step, r.save, check_stop=r.check, save_every=100, latest_saved=r.latest)
    assert r.steps == [2, 3] and r.saves == [(4, True)]


def test_metrics_are_flushed_before_every_save():
    """Regression (a mixture run SIGKILLed in step 3 resumed without step 2's TensorBoard scalars: the
    checkpoint of step 2 was on disk, its events still in the writer's buffer): flush precedes each save,
    the cadence, the final and the interrupt save."""
    events: list[str] = []
    r = Recorder(interrupt_at=5)
    save = lambda s, force: (events.append(f"save {s}"), r.save(s, force))  # noqa: E731
    with pytest.raises(KeyboardInterrupt):
        run_steps(0, 7, r.step, save, save_every=2, latest_saved=r.latest, flush=lambda: events.append("flush"))
    assert events == ["flush", "save 2", "flush", "save 4", "flush", "save 5"]
    events.clear()
    run_steps(0, 3, Recorder().step, save, save_every=2, latest_saved=lambda: None,
              flush=lambda: events.append("flush"))
    assert events == ["flush", "save 2", "flush", "save 3"]
