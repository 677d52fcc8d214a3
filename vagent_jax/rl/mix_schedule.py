"""The data-mix schedule (config `tasks.mix_schedule`): each RL step's mixture weights.

  fixed           w_i = weight_i
  linear          w_i(s) = weight_i + min(s / ramp_steps, 1) * (final_weight_i - weight_i): from an easy mix
                  to a hard one over ramp_steps steps
  pass_rate_band  w_i = weight_i * (1 if lo < p_i < hi else outside), p_i the member's smoothed measured
                  pass rate (p <- ema * p + (1 - ema) * step rate; unmeasured members count as in the band):
                  more of the tasks that are neither solved nor hopeless, a little of the rest to keep measuring

The state (the smoothed pass rates) is a JSON dict saved in the checkpoint, so a resumed run draws the
same mixture as the uninterrupted one.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from vagent_jax.data.mixture import MixEntry, MixScheduleConfig


def linear_weights(start: Sequence[float], end: Sequence[float], step: int, ramp_steps: int) -> list[float]:
    """The linear ramp at `step` (hand-worked: start (1, 0), end (0, 1), step 25 of 100 -> (0.75, 0.25))."""
    f = min(max(step, 0) / ramp_steps, 1.0)
    return [a + f * (b - a) for a, b in zip(start, end)]


def band_weights(base: Sequence[float], rates: Sequence[float | None], band: tuple[float, float],
                 outside: float) -> list[float]:
    """base_i x (1 inside the open band or unmeasured, `outside` elsewhere)."""
    lo, hi = band
    return [w * (1.0 if p is None or lo < p < hi else outside) for w, p in zip(base, rates)]


class MixSchedule:
    """Weights per step for the mixture entries; `observe` feeds the measured per-member pass rates."""

    def __init__(self, entries: Sequence[MixEntry], cfg: MixScheduleConfig, state: Mapping[str, Any] | None = None):
        self.entries, self.cfg = list(entries), cfg
        self.names = [e.tag for e in entries]
        saved = dict(state["pass_rates"]) if state else {}
        self.rates: dict[str, float | None] = {k: saved.get(k) for k in self.names}

    def weights(self, step: int) -> list[float]:
        """The weights of `step` (0-based), one per entry; falls back to the start weights if all are 0."""
        start = [e.weight for e in self.entries]
        if self.cfg.kind == "linear":
            return linear_weights(start, [e.end_weight for e in self.entries], step, self.cfg.ramp_steps)
        if self.cfg.kind == "pass_rate_band":
            w = band_weights(start, [self.rates[k] for k in self.names], self.cfg.band, self.cfg.outside)
            return w if sum(w) > 0 else start
        return start

    def observe(self, pass_rates: Mapping[str, float]) -> None:
        """Smooth in one step's measured pass rate of each member that had rollouts."""
        a = self.cfg.ema
        for k, p in pass_rates.items():
            if k in self.rates:
                old = self.rates[k]
                self.rates[k] = float(p) if old is None else a * old + (1 - a) * float(p)

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state for the checkpoint."""
        return {"pass_rates": dict(self.rates)}
