"""What an RL update step reports, and its exact reduction over the updates of one training step.

A step returns `StepMetrics`: (sum, count) pairs, maxima, totals and the per-token entropies. The host
adds sums and counts over all updates (mini-batches) of the step and divides once, takes the max of
maxima, adds totals, and takes entropy percentiles over every counted token of every update, so a logged
value does not depend on how many updates the batch was cut into or how many tokens each held.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import numpy as np

ENTROPY_PERCENTILES = (10, 50, 90)


class StepMetrics(NamedTuple):
    """One update's metrics (device arrays, replicated).

    pairs: name -> (sum, count), the logged value is sum / count after adding over updates;
    maxima: name -> value, logged as the max; totals: name -> value, logged as the sum;
    token_entropy / token_mask: [B, T] policy entropy of each token and whether it counts.
    """

    pairs: dict[str, tuple[jax.Array, jax.Array]]
    maxima: dict[str, jax.Array]
    totals: dict[str, jax.Array]
    token_entropy: jax.Array
    token_mask: jax.Array


def reduce_step_metrics(updates: Sequence[Any]) -> dict[str, float]:
    """Exact scalars over a step's updates: sum(sums) / sum(counts) (0 where the count is 0), max of
    maxima, sum of totals, entropy_p10/p50/p90 over all counted tokens (numpy's linear interpolation; absent
    when no token counts)."""
    host = [jax.device_get(u) for u in updates]
    out: dict[str, float] = {}
    if not host:
        return out
    for name in host[0].pairs:
        s = sum(float(u.pairs[name][0]) for u in host)
        c = sum(float(u.pairs[name][1]) for u in host)
        out[name] = s / c if c != 0 else 0.0
    for name in host[0].maxima:
        out[name] = max(float(u.maxima[name]) for u in host)
    for name in host[0].totals:
        out[name] = sum(float(u.totals[name]) for u in host)
    values = np.concatenate([np.asarray(u.token_entropy)[np.asarray(u.token_mask, bool)] for u in host])
    if values.size:
        for q, v in zip(ENTROPY_PERCENTILES, np.percentile(values, ENTROPY_PERCENTILES)):
            out[f"entropy_p{q}"] = float(v)
    return out
