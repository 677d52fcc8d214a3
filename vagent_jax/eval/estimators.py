"""Evaluation estimators: unbiased pass@k, maj@k, (weighted) majority vote, and 95% intervals.

All pure numpy/Python; the eval loop feeds them per-problem sample counts or answers.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence

import numpy as np

Z_95 = 1.959963984540054  # two-sided 95% standard-normal quantile


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k)/C(n, k).

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which avoids huge binomials; exactly 1 when n-c < k.
    """
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"pass_at_k: {name} must be an integer, got {v!r}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    i = np.arange(n - c + 1, n + 1, dtype=np.float64)
    return float(1.0 - np.prod(1.0 - k / i))


def mean_pass_at_k(num_samples: Sequence[int], num_correct: Sequence[int], k: int) -> float:
    """Mean over problems of pass_at_k(n_j, c_j, k); the benchmark-level pass@k."""
    if len(num_samples) != len(num_correct):
        raise ValueError(f"mean_pass_at_k: {len(num_samples)} sample counts but {len(num_correct)} correct counts")
    if len(num_samples) == 0:
        raise ValueError("mean_pass_at_k: no problems given")
    return float(np.mean([pass_at_k(int(n), int(c), k) for n, c in zip(num_samples, num_correct)]))


def majority_vote(answers: Sequence[Hashable | None], weights: Sequence[float] | None = None) -> Hashable | None:
    """The answer with the largest total weight V(a) = sum_i w_i [answer_i == a] (w_i = 1 if no weights).

    None answers (unparsed) cast no vote; if every answer is None the result is None. Ties go to the
    tied answer whose first occurrence comes earliest in `answers` (a deterministic, order-based rule).
    """
    if weights is not None and len(weights) != len(answers):
        raise ValueError(f"majority_vote: {len(answers)} answers but {len(weights)} weights")
    totals: dict[Hashable, float] = {}  # insertion order = first occurrence
    for i, a in enumerate(answers):
        if a is None:
            continue
        totals[a] = totals.get(a, 0.0) + (1.0 if weights is None else float(weights[i]))
    if not totals:
        return None
    best = max(totals.values())
    return next(a for a, v in totals.items() if v == best)


def maj_at_k(
    answers: Sequence[Hashable | None],
    k: int,
    *,
    labels: Sequence[bool] | None = None,
    correct_fn: Callable[[Hashable], bool] | None = None,
) -> float:
    """1.0 if the majority answer of the first k samples is correct, else 0.0.

    Ties: majority_vote's rule (earliest first occurrence among the k samples wins); None answers do not
    vote and an all-None vote scores 0. Correctness comes from correct_fn(answer) or, with per-sample
    labels, the label of the first sample that gave the voted answer (give exactly one of the two).
    """
    if (labels is None) == (correct_fn is None):
        raise ValueError("maj_at_k: give exactly one of labels= or correct_fn=")
    if not 1 <= k <= len(answers):
        raise ValueError(f"maj_at_k: need 1 <= k <= {len(answers)} (number of answers), got k={k}")
    if labels is not None and len(labels) != len(answers):
        raise ValueError(f"maj_at_k: {len(answers)} answers but {len(labels)} labels")
    head = list(answers[:k])
    voted = majority_vote(head)
    if voted is None:
        return 0.0
    if correct_fn is not None:
        return float(bool(correct_fn(voted)))
    return float(bool(labels[head.index(voted)]))


def wilson_interval(successes: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial rate p = s/n (95% by default):
    (p + z^2/2n -+ z*sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n). Stays inside [0, 1] and is sane at p=0 or 1.
    """
    if total < 1 or not 0 <= successes <= total:
        raise ValueError(f"wilson_interval: need 0 <= successes <= total and total >= 1, got {successes}/{total}")
    p = successes / total
    denom = 1.0 + z * z / total
    centre = p + z * z / (2 * total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return max(0.0, (centre - half) / denom), min(1.0, (centre + half) / denom)


def mean_interval(scores: Sequence[float], z: float = Z_95) -> tuple[float, float, float]:
    """(mean, low, high): normal interval mean -+ z * s/sqrt(m) over m per-problem scores in [0, 1]
    (s = sample std, ddof=1), clipped to [0, 1]. For fractional scores such as per-problem pass@k."""
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"mean_interval: need a 1-D list of at least 2 per-problem scores, got shape {x.shape}")
    mean = float(x.mean())
    half = z * float(x.std(ddof=1)) / math.sqrt(x.size)
    return mean, max(0.0, mean - half), min(1.0, mean + half)
