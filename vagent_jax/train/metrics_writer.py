"""Training metrics out of the process: TensorBoard event files, a JSONL mirror, a terminal progress bar.

MetricsWriter writes every step's scalars (and optional histograms) to TensorBoard with tensorboardX and
the same scalars to `metrics.jsonl`, so reports and tests read them without TensorBoard. In a multi-process
job only process 0 writes. On resume, `purge_step` hides what a crashed run logged past its last
checkpoint (TensorBoard's purge marker; the JSONL lines are dropped).
Metrics leave the step as (sum, count) pairs; reduce_metric_pairs adds sums and counts first and divides
once, so micro-batches and hosts weight every token equally.
"""
from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

JSONL_NAME = "metrics.jsonl"
PROGRESS_KEYS = ("reward", "pass_rate", "entropy", "step_time")


def reduce_metric_pairs(pairs: Sequence[Mapping[str, tuple[Any, Any]]]) -> dict[str, float]:
    """Mean of each metric over parts: mean = (sum_k s_k) / (sum_k n_k); NaN when the total count is 0.

    A metric may be missing from some parts (it then contributes nothing there).
    """
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for i, part in enumerate(pairs):
        for name, pair in part.items():
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"metric '{name}' in part {i} must be a (sum, count) pair, got {pair!r}")
            s, n = float(np.asarray(pair[0])), float(np.asarray(pair[1]))
            if n < 0:
                raise ValueError(f"metric '{name}' in part {i} has a negative count {n}")
            sums[name] = sums.get(name, 0.0) + s
            counts[name] = counts.get(name, 0.0) + n
    return {k: (sums[k] / counts[k] if counts[k] > 0 else math.nan) for k in sums}


def match_tag(tags: Iterable[str], key: str) -> str | None:
    """The tag a short key names: the exact tag, else one whose last '/' part is `key`, else starts with it.

    E.g. key 'reward' finds 'rl/reward', then 'rl/reward_mean'; ties go to the alphabetically first tag.
    """
    tags = sorted(tags)
    if key in tags:
        return key
    for rule in (lambda last: last == key, lambda last: last.startswith(key + "_")):
        hits = [t for t in tags if rule(t.rsplit("/", 1)[-1])]
        if hits:
            return hits[0]
    return None


def _scalar(tag: str, value: Any) -> float:
    arr = np.asarray(value)
    if arr.size != 1:
        raise ValueError(f"metric '{tag}' must be a scalar, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != np.bool_:
        raise TypeError(f"metric '{tag}' must be numeric, got {arr.dtype}")
    return float(arr.reshape(()))


def _process_index() -> int:
    import jax

    return jax.process_index()


class MetricsWriter:
    """Per-step scalars and histograms to TensorBoard (tensorboardX) plus `metrics.jsonl` in `logdir`."""

    def __init__(self, logdir: str | Path, purge_step: int | None = None, process_index: int | None = None,
                 flush_secs: int = 30) -> None:
        self.logdir = Path(logdir)
        self.active = (_process_index() if process_index is None else process_index) == 0
        self._tb = None
        self._jsonl: IO[str] | None = None
        if not self.active:
            return
        from tensorboardX import SummaryWriter

        self.logdir.mkdir(parents=True, exist_ok=True)
        jsonl = self.logdir / JSONL_NAME
        if purge_step is not None and jsonl.exists():
            kept = [ln for ln in jsonl.read_text().splitlines() if ln and json.loads(ln)["step"] < purge_step]
            jsonl.write_text("".join(ln + "\n" for ln in kept))
        # A unique, time-ordered suffix: a restart within the same second must not overwrite the old file.
        self._tb = SummaryWriter(str(self.logdir), purge_step=purge_step, flush_secs=flush_secs,
                                 filename_suffix=f".{time.time_ns()}")
        self._jsonl = jsonl.open("a")

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Log each named scalar at `step` (jax/numpy 0-d arrays are accepted)."""
        if not self.active:
            return
        values = {tag: _scalar(tag, v) for tag, v in scalars.items()}
        assert self._tb is not None and self._jsonl is not None
        for tag, v in values.items():
            self._tb.add_scalar(tag, v, global_step=int(step))
        self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), "scalars": values}) + "\n")
        self._jsonl.flush()  # a line per step, visible to `tail -f` at once

    def write_histogram(self, step: int, tag: str, values: Any) -> None:
        """Log the distribution of `values` (any shape; non-finite entries are dropped; none left: skipped)."""
        if not self.active:
            return
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        arr = arr[np.isfinite(arr)]
        if arr.size == 0:
            return
        assert self._tb is not None
        self._tb.add_histogram(tag, arr, global_step=int(step))

    def flush(self) -> None:
        """Push buffered events and JSONL lines to disk."""
        if self.active:
            assert self._tb is not None and self._jsonl is not None
            self._tb.flush()
            self._jsonl.flush()

    def close(self) -> None:
        """Flush and close the files (idempotent)."""
        if self.active and self._tb is not None and self._jsonl is not None:
            self._tb.close()
            self._jsonl.close()
            self._tb, self._jsonl, self.active = None, None, False

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_scalars(logdir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """All scalars in the TensorBoard event files of `logdir`: {tag: [(step, value)]} in file order."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    path = Path(logdir)
    if not path.is_dir() or not list(path.glob("events.out.tfevents.*")):
        raise FileNotFoundError(f"no TensorBoard event files in '{path}'")
    acc = ea.EventAccumulator(str(path), size_guidance={ea.SCALARS: 0})
    acc.Reload()
    return {tag: [(int(e.step), float(e.value)) for e in acc.Scalars(tag)] for tag in acc.Tags()[ea.SCALARS]}


def read_jsonl_scalars(logdir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """The JSONL mirror of `logdir` as {tag: [(step, value)]} (same shape as read_scalars)."""
    path = Path(logdir) / JSONL_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no metrics file '{path}'")
    out: dict[str, list[tuple[int, float]]] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            step, scalars = int(rec["step"]), rec["scalars"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"'{path}' line {lineno} is not a metrics record: {e}") from None
        for tag, v in scalars.items():
            out.setdefault(tag, []).append((step, float(v)))
    return out


class ProgressBar:
    """A tqdm bar over training steps showing the key numbers on a TTY; elsewhere (a pipe, a log file) one
    plain line every `line_every` steps and at the last step, so a redirected run still shows progress."""

    def __init__(self, total: int | None, keys: Sequence[str] = PROGRESS_KEYS, enabled: bool = True,
                 stream: IO[str] | None = None, desc: str = "train", line_every: int = 10) -> None:
        from tqdm import tqdm

        if line_every < 1:
            raise ValueError(f"ProgressBar: line_every must be >= 1, got {line_every}")
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = callable(isatty) and bool(isatty())
        self.enabled = enabled and self.tty
        self.lines = enabled and not self.tty
        self.keys, self.total, self.desc, self.line_every = tuple(keys), total, desc, line_every
        self._bar = tqdm(total=total, desc=desc, file=self.stream, disable=not self.enabled, dynamic_ncols=True)

    def _shown(self, scalars: Mapping[str, Any]) -> dict[str, str]:
        shown = {}
        for key in self.keys:
            tag = match_tag(scalars.keys(), key)
            if tag is not None:
                shown[key] = f"{_scalar(tag, scalars[tag]):.4g}"
        return shown

    def update(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Move the bar to `step` and show the values of `keys` found in `scalars` (see match_tag); off a
        TTY, print them as one line when step is a multiple of line_every or the last step."""
        if self.lines and (step % self.line_every == 0 or step == self.total):
            values = " ".join(f"{k}={v}" for k, v in self._shown(scalars).items())
            of = f"/{self.total}" if self.total else ""
            print(f"{self.desc} step {step}{of}: {values}".rstrip(), file=self.stream, flush=True)
        if not self.enabled:
            return
        self._bar.set_postfix(self._shown(scalars), refresh=False)
        self._bar.update(max(0, int(step) - self._bar.n))

    def close(self) -> None:
        """Close the bar (prints the final line on a TTY)."""
        self._bar.close()
