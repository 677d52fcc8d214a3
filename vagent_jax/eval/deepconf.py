"""DeepConf (Fu et al., arXiv 2508.15260): confidence-filtered, confidence-weighted voting over traces.

Token confidence C_t = -(1/k) sum_{j<=k} log P_t(j) over the k most likely tokens (the decode kernel
emits it; token_confidence is the numpy reference). Group confidence = mean of C_t over a sliding
window of n tokens; a trace shorter than n has one window (its whole length). Offline: score traces,
keep the top eta%, vote weighted by the score. Online (simulated here from complete traces): warm-up
traces set a threshold s; a later trace stops at the first full window whose mean drops below s.
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from vagent_jax.eval.estimators import majority_vote

ScoreKind = Literal["mean", "lowest_group", "bottom_10", "tail"]
SCORE_KINDS: tuple[str, ...] = ("mean", "lowest_group", "bottom_10", "tail")


def token_confidence(topk_logprobs: np.ndarray) -> np.ndarray:
    """C_t = -mean_j log P_t(j) over the last axis (the top-k log-probs): [..., k] -> [...]."""
    lp = np.asarray(topk_logprobs, dtype=np.float64)
    if lp.ndim < 1 or lp.shape[-1] < 1:
        raise ValueError(f"token_confidence: topk_logprobs needs a last axis of size k >= 1, got shape {lp.shape}")
    return -lp.mean(axis=-1)


def _trace(conf: np.ndarray | Sequence[float], name: str = "confidences") -> np.ndarray:
    c = np.asarray(conf, dtype=np.float64)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D per-token confidence array, got shape {c.shape}")
    return c


def _check_window(window: int) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window: must be a positive integer number of tokens, got {window!r}")


def group_confidences(conf: np.ndarray | Sequence[float], window: int) -> np.ndarray:
    """Sliding-window means of C_t: [T] -> [max(1, T - n + 1)]; window i covers tokens i..i+n-1."""
    _check_window(window)
    c = _trace(conf)
    if c.size <= window:
        return np.array([c.mean()])
    csum = np.concatenate([[0.0], np.cumsum(c)])
    return (csum[window:] - csum[:-window]) / window


def trace_score(conf: np.ndarray | Sequence[float], window: int, kind: ScoreKind, bottom_fraction: float = 0.1) -> float:
    """One trace score from its per-token confidences.

    mean: mean C_t. lowest_group: C_least = min group confidence. bottom_10: mean of the lowest
    max(1, floor(bottom_fraction * #windows)) group confidences. tail: mean C_t of the last n tokens.
    """
    c = _trace(conf)
    if kind == "mean":
        return float(c.mean())
    if kind == "tail":
        _check_window(window)
        return float(c[-window:].mean())
    groups = group_confidences(c, window)
    if kind == "lowest_group":
        return float(groups.min())
    if kind == "bottom_10":
        m = max(1, math.floor(bottom_fraction * groups.size))
        return float(np.sort(groups)[:m].mean())
    raise ValueError(f"score: unknown DeepConf trace score {kind!r}; choose one of {SCORE_KINDS}")


def top_percent_indices(scores: Sequence[float], eta: float) -> np.ndarray:
    """Indices of the top eta% traces by score: the ceil(eta/100 * N) highest (at least one),
    ties at the cut going to the earlier trace. Returned in trace order."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"scores: need a non-empty 1-D list, got shape {s.shape}")
    if not 0 < eta <= 100:
        raise ValueError(f"eta: must be a percentage in (0, 100], got {eta}")
    keep = max(1, math.ceil(eta / 100.0 * s.size - 1e-9))
    order = np.argsort(-s, kind="stable")
    return np.sort(order[:keep])


@dataclass(frozen=True)
class OfflineResult:
    """Offline DeepConf vote: the chosen answer, the kept trace indices and every trace's score."""

    answer: Hashable | None
    kept: tuple[int, ...]
    scores: tuple[float, ...]


def deepconf_offline(
    answers: Sequence[Hashable | None],
    confidences: Sequence[np.ndarray | Sequence[float]],
    *,
    window: int = 2048,
    score: ScoreKind = "lowest_group",
    eta: float = 10.0,
) -> OfflineResult:
    """Score every trace, keep the top eta%, then vote V(a) = sum_{kept t} score_t [answer_t == a]."""
    if len(answers) != len(confidences):
        raise ValueError(f"deepconf_offline: {len(answers)} answers but {len(confidences)} confidence traces")
    scores = [trace_score(c, window, score) for c in confidences]
    kept = top_percent_indices(scores, eta)
    answer = majority_vote([answers[i] for i in kept], [scores[i] for i in kept])
    return OfflineResult(answer, tuple(int(i) for i in kept), tuple(scores))


def online_threshold(warmup_lowest_group: Sequence[float], eta: float) -> float:
    """s = the (100 - eta)th percentile (numpy linear interpolation) of the warm-up traces' C_least."""
    w = np.asarray(warmup_lowest_group, dtype=np.float64)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"warmup_lowest_group: need a non-empty 1-D list, got shape {w.shape}")
    if not 0 < eta <= 100:
        raise ValueError(f"eta: must be a percentage in (0, 100], got {eta}")
    return float(np.percentile(w, 100.0 - eta))


def stop_position(conf: np.ndarray | Sequence[float], threshold: float, window: int) -> int | None:
    """Where the online rule would stop this trace: the number of tokens generated, or None if never.

    The check runs after each token t (0-based) once a full window exists (t >= n - 1): stop after
    token t if mean(C_{t-n+1..t}) < threshold, i.e. return t + 1. A trace shorter than n never stops.
    """
    c = _trace(conf)
    _check_window(window)
    if c.size < window:
        return None
    below = np.flatnonzero(group_confidences(c, window) < threshold)  # window i ends at token i + n - 1
    return None if below.size == 0 else int(below[0]) + window


@dataclass(frozen=True)
class OnlineResult:
    """Online DeepConf outcome, simulated from complete traces, with the token accounting."""

    answer: Hashable | None
    threshold: float
    voters: tuple[str, ...]  # "warmup:i" / "trace:i" for each trace that voted
    stopped_at: tuple[int | None, ...]  # per later trace: tokens generated when stopped, None = finished
    tokens_full: int  # tokens of all traces run to completion
    tokens_used: int  # warm-up traces in full + later traces up to their stop
    tokens_saved: int

    @property
    def saved_fraction(self) -> float:
        """tokens_saved / tokens_full."""
        return self.tokens_saved / self.tokens_full


def deepconf_online(
    warmup_answers: Sequence[Hashable | None],
    warmup_confidences: Sequence[np.ndarray | Sequence[float]],
    answers: Sequence[Hashable | None],
    confidences: Sequence[np.ndarray | Sequence[float]],
    *,
    window: int = 2048,
    eta: float = 10.0,
) -> OnlineResult:
    """Threshold from the warm-up traces, early-stop the later ones, vote weighted by C_least.

    Voters: warm-up traces with C_least >= s, plus later traces that were not stopped (their C_least
    over the whole trace). Stopped traces do not vote.
    """
    if len(warmup_answers) != len(warmup_confidences) or len(answers) != len(confidences):
        raise ValueError("deepconf_online: each answers list needs one confidence trace per answer")
    warm_least = [trace_score(c, window, "lowest_group") for c in warmup_confidences]
    s = online_threshold(warm_least, eta)
    vote_answers: list[Hashable | None] = []
    vote_weights: list[float] = []
    voters: list[str] = []
    for i, (a, least) in enumerate(zip(warmup_answers, warm_least)):
        if least >= s:
            vote_answers.append(a)
            vote_weights.append(least)
            voters.append(f"warmup:{i}")
    stops: list[int | None] = []
    tokens_full = sum(len(c) for c in warmup_confidences)
    tokens_used = tokens_full
    for i, (a, c) in enumerate(zip(answers, confidences)):
        stop = stop_position(c, s, window)
        stops.append(stop)
        tokens_full += len(c)
        tokens_used += len(c) if stop is None else stop
        if stop is None:
            vote_answers.append(a)
            vote_weights.append(trace_score(c, window, "lowest_group"))
            voters.append(f"trace:{i}")
    return OnlineResult(
        answer=majority_vote(vote_answers, vote_weights),
        threshold=s,
        voters=tuple(voters),
        stopped_at=tuple(stops),
        tokens_full=tokens_full,
        tokens_used=tokens_used,
        tokens_saved=tokens_full - tokens_used,
    )
