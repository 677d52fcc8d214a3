"""The numbers of `vagent eval`, computed from k scored samples per task (pure numpy, no model).

Each sample is an EvalSample: the final answer the env's parser extracted (None = unparsed), whether the
verifier passed it, its per-token DeepConf confidences over the tokens the policy generated, and that token
count. Every metric is a per-task score averaged over tasks, so one interval method serves them all:
a percentile bootstrap over tasks (samples of one task are correlated, so tasks are the resampled unit).
A voted answer scores with the label of the first sample (in sample order) that gave it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence

import numpy as np

from vagent_jax.config import require
from vagent_jax.eval.deepconf import (SCORE_KINDS, deepconf_offline, deepconf_online, online_threshold,
                                       trace_score)
from vagent_jax.eval.estimators import maj_at_k, majority_vote, pass_at_k, wilson_interval

BOOTSTRAP_RESAMPLES = 1000
CI_METHOD = f"percentile bootstrap over tasks ({BOOTSTRAP_RESAMPLES} resamples, 95%)"


@dataclasses.dataclass(frozen=True)
class EvalSample:
    """One scored trajectory: parsed final answer, verifier label, generated-token confidences [T]."""

    answer: Hashable | None
    correct: bool
    confidences: np.ndarray
    num_tokens: int


@dataclasses.dataclass(frozen=True)
class DeepConfSettings:
    """DeepConf knobs: trace scores and top-eta% cuts (offline), warm-up count and eta (online), window n."""

    scores: tuple[str, ...] = ("lowest_group", "bottom_10", "tail", "mean")
    etas: tuple[float, ...] = (10.0, 90.0)  # offline: keep the top eta% of traces by score
    online: bool = True
    warmup: int = 4  # online: N_init warm-up traces per task set the threshold
    online_eta: float = 10.0  # online: s = percentile_{100 - eta} of the warm-up C_least
    window: int = 64  # tokens per sliding window (paper: 2048; our traces are short)
    online_live: bool = True  # also re-sample the later traces with the engine stopping them for real

    def validate(self) -> None:
        """Names the key at fault."""
        require(len(self.scores) > 0 and all(s in SCORE_KINDS for s in self.scores), "scores",
                f"{self.scores} must be a non-empty subset of {SCORE_KINDS}")
        require(len(self.etas) > 0 and all(0 < e <= 100 for e in self.etas), "etas",
                f"every eta must be a percentage in (0, 100], got {self.etas}")
        require(0 < self.online_eta <= 100, "online_eta", f"must be in (0, 100], got {self.online_eta}")
        require(self.warmup >= 1, "warmup", f"must be >= 1, got {self.warmup}")
        require(self.window >= 1, "window", f"must be >= 1, got {self.window}")


def bootstrap_interval(scores: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of per-task scores: resample tasks with replacement
    `resamples` times, take the 2.5th and 97.5th percentiles of the resampled means."""
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"bootstrap_interval: need a non-empty 1-D list of per-task scores, got shape {x.shape}")
    idx = np.random.default_rng(seed).integers(0, x.size, size=(resamples, x.size))
    means = x[idx].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def label_of(answer: Hashable | None, samples: Sequence[EvalSample]) -> float:
    """1.0 if the first sample that gave `answer` passed the verifier; None or unseen answers score 0."""
    if answer is None:
        return 0.0
    return next((float(s.correct) for s in samples if s.answer == answer), 0.0)


def pass_ks(k: int) -> list[int]:
    """The k' reported for pass@k': 1, 2, 4, ... up to k, and k itself."""
    out, v = [], 1
    while v < k:
        out.append(v)
        v *= 2
    return out + [k]


def _conf(s: EvalSample) -> np.ndarray:
    if s.confidences.size == 0:  # every turn yields at least one generated token; guard anyway
        return np.zeros(1)
    return s.confidences


def task_scores(samples: Sequence[EvalSample], k: int, dc: DeepConfSettings) -> dict[str, float]:
    """Every per-task score of one task's k samples (keys as in the report; values in [0, 1] except the
    online token counts, which are integers summed over tasks by `aggregate`)."""
    if len(samples) != k:
        raise ValueError(f"task_scores: expected k={k} samples, got {len(samples)}")
    c = sum(bool(s.correct) for s in samples)
    out = {f"pass@{j}": pass_at_k(k, c, j) for j in pass_ks(k)}
    answers = [s.answer for s in samples]
    out[f"maj@{k}"] = maj_at_k(answers, k, labels=[s.correct for s in samples])
    confs = [_conf(s) for s in samples]
    for kind in dc.scores:
        weighted = deepconf_offline(answers, confs, window=dc.window, score=kind, eta=100.0)  # type: ignore[arg-type]
        out[f"deepconf/{kind}/weighted_vote"] = label_of(weighted.answer, samples)
        for eta in dc.etas:
            res = deepconf_offline(answers, confs, window=dc.window, score=kind, eta=eta)  # type: ignore[arg-type]
            out[f"deepconf/{kind}/top{eta:g}_vote"] = label_of(res.answer, samples)
    if dc.online:
        w = dc.warmup
        on = deepconf_online(answers[:w], confs[:w], answers[w:], confs[w:], window=dc.window, eta=dc.online_eta)
        out["deepconf_online/accuracy"] = label_of(on.answer, samples)
        out["deepconf_online/tokens_full"] = float(on.tokens_full)
        out["deepconf_online/tokens_used"] = float(on.tokens_used)
        out["deepconf_online/traces_stopped"] = float(sum(x is not None for x in on.stopped_at))
    return out


def online_threshold_of(warmup: Sequence[EvalSample], dc: DeepConfSettings) -> float:
    """The online threshold s of one task: percentile_{100-eta} of its warm-up traces' C_least."""
    return online_threshold([trace_score(_conf(s), dc.window, "lowest_group") for s in warmup], dc.online_eta)


def live_online_scores(warmup: Sequence[EvalSample], live: Sequence[EvalSample], stopped: Sequence[bool],
                       full_tokens: int, dc: DeepConfSettings) -> dict[str, float]:
    """Online DeepConf with traces the engine really stopped: votes from warm-up traces with C_least >= s
    and unstopped live traces, each weighted by its C_least; tokens against `full_tokens` (the main pass's
    k full traces of the task, an estimate: the live traces are fresh samples)."""
    s = online_threshold_of(warmup, dc)
    voters = [(x, trace_score(_conf(x), dc.window, "lowest_group")) for x in warmup]
    voters = [(x, c) for x, c in voters if c >= s]
    voters += [(x, trace_score(_conf(x), dc.window, "lowest_group")) for x, st in zip(live, stopped) if not st]
    answer = majority_vote([x.answer for x, _ in voters], [c for _, c in voters])
    used = sum(x.num_tokens for x in warmup) + sum(x.num_tokens for x in live)
    return {"deepconf_online_live/accuracy": label_of(answer, [x for x, _ in voters]),
            "deepconf_online_live/tokens_full": float(full_tokens),
            "deepconf_online_live/tokens_used": float(used),
            "deepconf_online_live/traces_stopped": float(sum(stopped))}


TOKEN_KEYS = ("tokens_full", "tokens_used", "traces_stopped")


def aggregate(per_task: Sequence[dict[str, float]], num_correct: int, num_samples: int, *,
              seed: int = 0) -> tuple[dict[str, float], dict[str, list[float]]]:
    """(metrics, ci95): task-mean of each score with its bootstrap interval; token counts are summed and
    turned into tokens_saved_fraction = 1 - used/full; pass@1 also gets a Wilson interval over all samples."""
    if not per_task:
        raise ValueError("aggregate: no tasks were scored")
    metrics: dict[str, float] = {}
    ci: dict[str, list[float]] = {}
    prefixes = set()
    for key in per_task[0]:
        vals = [t[key] for t in per_task]
        if key.rsplit("/", 1)[-1] in TOKEN_KEYS:
            prefixes.add(key.rsplit("/", 1)[0])
            metrics[key] = float(np.sum(vals))
            continue
        metrics[key] = float(np.mean(vals))
        ci[key] = list(bootstrap_interval(vals, seed=seed))
    ordered: dict[str, float] = {}
    for key, val in metrics.items():  # each group's saved fraction right after its token counts
        ordered[key] = val
        p = key.rsplit("/", 1)[0]
        if p in prefixes and key.endswith("/tokens_used"):
            full = metrics[f"{p}/tokens_full"]
            ordered[f"{p}/tokens_saved_fraction"] = 1.0 - val / full if full else 0.0
    metrics = ordered
    ci["pass@1_wilson"] = list(wilson_interval(num_correct, num_samples))
    return metrics, ci
