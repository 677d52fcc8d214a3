"""The loop skeleton every training command runs: the output-directory check, the NaN-streak guard that
stops a run, saving a resumable checkpoint on Ctrl-C / SIGTERM, and the step loop (`run_steps`: checkpoint
cadence, final save, interrupt save) that `vagent sft` and `vagent rl` share."""
from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Callable, Iterator

import jax

from vagent_jax.train.run_common import RunStopped


def check_writable(out: str | Path, command: str) -> Path:
    """Create `out` and prove it writable, or stop with a message naming the directory."""
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_probe.{jax.process_index()}"  # one per process: hosts may share the dir
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise SystemExit(f"vagent {command}: output directory '{path}' is not writable ({e.strerror})") from None
    return path


class BadStepGuard:
    """Counts consecutive skipped (non-finite) updates; `max_in_row` of them in a row stop the run."""

    def __init__(self, max_in_row: int, start_streak: int = 0) -> None:
        self.max_in_row = max_in_row
        self.streak = start_streak
        self.total = 0

    def observe(self, skipped: bool, step: int) -> None:
        """Record one step; raises RunStopped when the streak reaches the limit."""
        self.total += int(skipped)
        self.streak = self.streak + 1 if skipped else 0
        if self.streak >= self.max_in_row:
            raise RunStopped(f"step {step}: {self.streak} updates in a row had a non-finite loss or gradient "
                             f"(max_bad_steps={self.max_in_row}); stopping with the last good checkpoint kept")


@contextlib.contextmanager
def save_on_interrupt(save: Callable[[], None]) -> Iterator[None]:
    """Run the body; on Ctrl-C (SIGINT) or SIGTERM call `save()` (a resumable checkpoint), then re-raise."""
    def on_term(signum, frame):  # noqa: ANN001
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except KeyboardInterrupt:
        try:
            save()
        except Exception as e:  # noqa: BLE001 (state buffers donated to an interrupted step): keep the last save
            print(f"interrupted mid-step; the last periodic checkpoint is the resume point ({e})")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_steps(start: int, end: int, step: Callable[[int], None], save: Callable[[int, bool], None], *,
              save_every: int, latest_saved: Callable[[], int | None], stopped: bool = False,
              check_stop: Callable[[int], bool] | None = None, flush: Callable[[], None] | None = None) -> int:
    """The step loop SFT and RL share; returns the number of steps done.

    Runs step(s) for s in [start, end); once a step is done, check_stop(done) (SFT's validation) may end
    the run early. Saves every `save_every` steps (`save(done, False)`, not at the end or after a stop),
    saves what is done on Ctrl-C / SIGTERM (a step interrupted inside check_stop counts as done), and saves
    the final step unless it is already the newest checkpoint (a resumed run that had finished).
    stopped=True: a resumed run that had already stopped early; no step runs.
    flush (the metrics writer's) runs before every save: a checkpoint never claims steps whose logged
    metrics are still in a buffer that a SIGKILL would lose (a resumed run never re-logs those steps).
    """
    done = start

    def flushed_save(n: int, force: bool) -> None:
        if flush is not None:
            flush()
        save(n, force)

    with save_on_interrupt(lambda: flushed_save(done, True)):
        for s in range(start, end):
            if stopped:
                break
            step(s)
            done = s + 1
            stopped = check_stop is not None and check_stop(done)
            if done % save_every == 0 and done < end and not stopped:
                flushed_save(done, False)
        if latest_saved() != done:
            flushed_save(done, True)
    return done
