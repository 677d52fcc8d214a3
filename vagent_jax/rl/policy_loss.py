"""The one policy-gradient loss of the RL step; every algorithm variant is an option of
`PolicyLossConfig` (formulas: docs/algorithms.md), never a copy of the loss.

The loss leaves as (loss_sum, denominator) and every metric as (sum, count): add them across
micro-batches and hosts, then divide once. Token-, sequence-mean- and Dr.GRPO-aggregation add exactly
when micro-batches hold whole sequences. Token selections (Clip-Cov, KL-Cov, high-entropy tokens) are a
`Selections` pytree made by `select_tokens` over a whole update batch and passed in; without it, the
call selects over its own inputs (the same thing when the call sees the whole batch).
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from vagent_jax.config import require
from vagent_jax.rl import entropy_control as ec
from vagent_jax.rl.mismatch import MismatchMode, mismatch_weights

Objective = Literal["ppo_clip", "gspo", "cispo"]
Aggregation = Literal["token", "seq_mean_token_mean", "seq_sum_const"]
KLEstimator = Literal["none", "k1", "k3"]
CovControl = Literal["none", "clip_cov", "kl_cov"]
Pair = tuple[jax.Array, jax.Array]


@dataclasses.dataclass(frozen=True)
class PolicyLossConfig:
    """Static options of `policy_loss` (hashable, so it can be a jit static argument).

    objective: ppo_clip (clip-higher, eps_low/eps_high) | gspo (sequence ratio, gspo_eps_*) |
      cispo (clipped detached IS weight times log-prob, cispo_eps_*_is; defaults unverified).
    aggregation: token (DAPO) | seq_mean_token_mean (GRPO) | seq_sum_const (Dr. GRPO, / max_len).
    kl / kl_coef: penalty to a reference policy. covariance: Clip-Cov / KL-Cov (ppo_clip only).
    mismatch / mismatch_cap: rollout-train correction, cap C > 1. entropy_top_frac: high-entropy token
    selection rho in (0, 1], 1 = off.
    """

    objective: Objective = "ppo_clip"
    eps_low: float = 0.2
    eps_high: float = 0.28
    gspo_eps_low: float = 3e-4
    gspo_eps_high: float = 4e-4
    cispo_eps_low_is: float = 1.0
    cispo_eps_high_is: float = 0.28
    aggregation: Aggregation = "token"
    kl: KLEstimator = "none"
    kl_coef: float = 0.0
    covariance: CovControl = "none"
    clip_cov_ratio: float = 2e-4
    clip_cov_low: float = 1.0
    clip_cov_high: float = 5.0
    kl_cov_k: float = 2e-3
    kl_cov_beta: float = 1.0
    mismatch: MismatchMode = "none"
    mismatch_cap: float = 2.0
    entropy_top_frac: float = 1.0

    def validate(self) -> None:
        """Check names and ranges; every error names the offending key."""
        for key, tp in (("objective", Objective), ("aggregation", Aggregation), ("kl", KLEstimator),
                        ("covariance", CovControl), ("mismatch", MismatchMode)):
            value, known = getattr(self, key), typing.get_args(tp)
            require(value in known, key, f"{value!r} is not one of {known}")
        for key in ("eps_low", "eps_high", "gspo_eps_low", "gspo_eps_high", "cispo_eps_low_is", "cispo_eps_high_is"):
            require(getattr(self, key) >= 0, key, f"a clip bound must be >= 0, got {getattr(self, key)}")
        require(self.eps_low < 1, "eps_low", f"must be < 1 so that 1 - eps_low > 0, got {self.eps_low}")
        require(self.gspo_eps_low < 1, "gspo_eps_low", f"must be < 1, got {self.gspo_eps_low}")
        require(self.cispo_eps_low_is <= 1, "cispo_eps_low_is",
                f"must be <= 1 (lower bound 1 - eps must not be negative), got {self.cispo_eps_low_is}")
        require(self.kl_coef >= 0, "kl_coef", f"must be >= 0, got {self.kl_coef}")
        require(self.kl != "none" or self.kl_coef == 0, "kl_coef",
                f"is {self.kl_coef} but kl is 'none': pick k1 or k3")
        require(self.covariance == "none" or self.objective == "ppo_clip", "covariance",
                f"{self.covariance} applies to the ppo_clip objective only, not {self.objective}")
        require(0 < self.clip_cov_ratio <= 1, "clip_cov_ratio", f"must be in (0, 1], got {self.clip_cov_ratio}")
        require(self.clip_cov_low < self.clip_cov_high, "clip_cov_low",
                f"must be < clip_cov_high, got {self.clip_cov_low} >= {self.clip_cov_high}")
        require(0 < self.kl_cov_k <= 1, "kl_cov_k", f"must be in (0, 1], got {self.kl_cov_k}")
        require(self.kl_cov_beta >= 0, "kl_cov_beta", f"must be >= 0, got {self.kl_cov_beta}")
        require(self.mismatch_cap > 1, "mismatch_cap", f"cap C must be > 1, got {self.mismatch_cap}")
        require(0 < self.entropy_top_frac <= 1, "entropy_top_frac",
                f"must be in (0, 1] (1 = off), got {self.entropy_top_frac}")


class Selections(NamedTuple):
    """Token selections of one update batch, all [B, T] and detached.

    cov: Cov_i of log-prob and advantage (0 on invalid tokens); detached: Clip-Cov picks (zero loss);
    kl_cov: KL-Cov picks (penalised); kept: 1.0 on tokens the high-entropy selection keeps (all valid
    tokens when it is off).
    """

    cov: jax.Array
    detached: jax.Array
    kl_cov: jax.Array
    kept: jax.Array


def needs_selections(cfg: PolicyLossConfig) -> bool:
    """True when the loss selects tokens across the batch (Clip-Cov, KL-Cov or high-entropy tokens)."""
    return cfg.covariance != "none" or cfg.entropy_top_frac < 1


def select_tokens(cfg: PolicyLossConfig, logp: jax.Array, old_logp: jax.Array, advantages: jax.Array,
                  mask: jax.Array, entropy: jax.Array | None = None, key: jax.Array | None = None) -> Selections:
    """The batch's `Selections` from detached log-probs [B, T], old log-probs [B, T], advantages [B], the
    loss mask and entropy [B, T]; Clip-Cov candidates exclude tokens PPO's clip already cut off."""
    valid = mask > 0
    lp = jax.lax.stop_gradient(jnp.where(valid, logp, 0.0))
    old = jax.lax.stop_gradient(jnp.where(valid, old_logp, 0.0))
    cov = ec.token_covariance(lp, advantages, valid)
    none = jnp.zeros(valid.shape, bool)
    detached = kl_cov = none
    if cfg.covariance == "clip_cov":
        if key is None:
            raise ValueError("covariance 'clip_cov' needs a PRNG key (random pick of the tokens to detach)")
        ratio, adv = jnp.exp(lp - old), jnp.asarray(advantages, jnp.float32)[:, None]
        clipped = ((ratio < 1.0 - cfg.eps_low) & (adv < 0)) | ((ratio > 1.0 + cfg.eps_high) & (adv > 0))
        detached = ec.clip_cov_mask(cov, valid, key, cfg.clip_cov_ratio, cfg.clip_cov_low, cfg.clip_cov_high,
                                    clipped=clipped)
    elif cfg.covariance == "kl_cov":
        kl_cov = ec.kl_cov_mask(cov, valid, cfg.kl_cov_k)
    kept = valid.astype(jnp.float32)
    if cfg.entropy_top_frac < 1:
        if entropy is None:
            raise ValueError("entropy [B, T] is required by entropy_top_frac < 1")
        kept = ec.top_fraction_mask(jax.lax.stop_gradient(entropy), valid, cfg.entropy_top_frac).astype(jnp.float32)
    return Selections(cov, detached, kl_cov, kept)


def check_policy_loss_inputs(cfg: PolicyLossConfig, logp: Any, old_logp: Any, advantages: Any, mask: Any, *,
                             rollout_logp: Any = None, ref_logp: Any = None, entropy: Any = None, key: Any = None,
                             entropy_coef: Any = 0.0, max_len: int | None = None,
                             selections: Selections | None = None) -> tuple[jax.Array, ...]:
    """policy_loss's preconditions in one place: shapes ([B, T] everywhere, advantages [B]) and the inputs
    an option of `cfg` needs; stops naming the input at fault. Returns (logp, old_logp, advantages fp32, mask)
    as arrays."""
    logp, old_logp = jnp.asarray(logp), jnp.asarray(old_logp)
    advantages, mask = jnp.asarray(advantages, jnp.float32), jnp.asarray(mask)
    if logp.ndim != 2:
        raise ValueError(f"logp must be [B, T], got shape {logp.shape}")
    for name, x in (("old_logp", old_logp), ("mask", mask), ("rollout_logp", rollout_logp),
                    ("ref_logp", ref_logp), ("entropy", entropy)):
        if x is not None and x.shape != logp.shape:
            raise ValueError(f"{name} shape {x.shape} differs from logp shape {logp.shape}")
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages must be [B] = {logp.shape[:1]}, got shape {advantages.shape}")
    if cfg.aggregation == "seq_sum_const" and (max_len is None or max_len <= 0):
        raise ValueError(f"aggregation 'seq_sum_const' needs max_len > 0 (the generation limit), got {max_len}")
    if cfg.mismatch != "none" and rollout_logp is None:
        raise ValueError(f"mismatch '{cfg.mismatch}' needs rollout_logp [B, T] from the sampler")
    if cfg.kl != "none" and ref_logp is None:
        raise ValueError(f"kl '{cfg.kl}' needs ref_logp [B, T] from the reference policy")
    if cfg.covariance == "clip_cov" and key is None and selections is None:
        raise ValueError("covariance 'clip_cov' needs a PRNG key (random pick of the tokens to detach)")
    no_bonus = isinstance(entropy_coef, (int, float)) and entropy_coef == 0
    if entropy is None and (cfg.entropy_top_frac < 1 or not no_bonus):
        raise ValueError("entropy [B, T] is required by entropy_top_frac < 1 and by a nonzero entropy_coef")
    return logp, old_logp, advantages, mask


def _pg_token_loss(cfg, log_ratio, logp, adv, m, kl_cov_sel):
    """Per-token policy-gradient loss [B, T] and (clip_low, clip_high) indicator masks."""
    ratio = jnp.exp(log_ratio)
    if cfg.objective == "ppo_clip" and cfg.covariance == "kl_cov":
        # KL-Cov: -A rho everywhere, + beta |logp - logp_old| on the selected tokens; no clipping.
        loss = -adv * ratio + jnp.where(kl_cov_sel, cfg.kl_cov_beta * jnp.abs(log_ratio), 0.0)
        none = jnp.zeros_like(m, bool)
        return loss, none, none
    if cfg.objective == "cispo":
        lo, hi = 1.0 - cfg.cispo_eps_low_is, 1.0 + cfg.cispo_eps_high_is
        weight = jax.lax.stop_gradient(jnp.clip(ratio, lo, hi))
        return -weight * adv * logp, ratio < lo, ratio > hi
    if cfg.objective == "gspo":
        lo, hi = 1.0 - cfg.gspo_eps_low, 1.0 + cfg.gspo_eps_high
        seq_log = (m * log_ratio).sum(1, keepdims=True) / jnp.maximum(m.sum(1, keepdims=True), 1.0)
        ratio = jnp.broadcast_to(jnp.exp(seq_log), m.shape)  # s_i on every token of response i
    else:
        lo, hi = 1.0 - cfg.eps_low, 1.0 + cfg.eps_high
    loss = jnp.maximum(-adv * ratio, -adv * jnp.clip(ratio, lo, hi))
    return loss, (ratio < lo) & (adv < 0), (ratio > hi) & (adv > 0)


def _aggregate(x: jax.Array, w: jax.Array, aggregation: str, max_len: int | None) -> Pair:
    """(sum, denominator) of per-token values x [B, T] under token weights w [B, T]."""
    if aggregation == "token":
        return (w * x).sum(), w.sum()
    per_seq = (w * x).sum(1)
    n_tok = w.sum(1)
    n_seq = (n_tok > 0).sum().astype(jnp.float32)
    if aggregation == "seq_mean_token_mean":
        return (per_seq / jnp.maximum(n_tok, 1.0)).sum(), n_seq
    return per_seq.sum() / max_len, n_seq


def policy_loss(
    logp: jax.Array,
    old_logp: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    cfg: PolicyLossConfig,
    rollout_logp: jax.Array | None = None,
    ref_logp: jax.Array | None = None,
    entropy: jax.Array | None = None,
    key: jax.Array | None = None,
    entropy_coef: jax.Array | float = 0.0,
    max_len: int | None = None,
    selections: Selections | None = None,
) -> tuple[jax.Array, jax.Array, dict[str, Pair]]:
    """RL policy loss as (loss_sum, denominator, metrics); the loss is loss_sum / denominator.

    Per valid token: l = w_mis * (1 - detached) * pg + kl_coef * KL_ref - entropy_coef * H, where pg is
    the objective's token loss (ppo_clip: -min(rho A, clip(rho, 1-eps_low, 1+eps_high) A); gspo: the same
    with s_i = exp(mean_t log rho) on all tokens of response i; cispo: -sg(clip(rho, 1-eps_low_is,
    1+eps_high_is)) A log pi), w_mis the detached TIS/MIS weight, detached the Clip-Cov pick, KL_ref
    k1 = logp - ref or k3 = exp(ref - logp) - (ref - logp) - 1. Aggregation: token -> sum l / #tokens;
    seq_mean_token_mean -> sum_i mean_t l / #sequences; seq_sum_const -> sum_i (sum_t l / max_len) /
    #sequences (sequences with no counted token are left out of #sequences).
    High-entropy selection (entropy_top_frac < 1) drops all but the top fraction of valid tokens by
    entropy from every term, and the denominator (token counts) counts only the kept tokens.
    selections: the update batch's `select_tokens` result for these rows (the RL step passes it when it
    splits the batch into micro-batches); None selects over this call's own tokens.

    Shapes: logp, old_logp, mask, rollout_logp, ref_logp, entropy [B, T]; advantages [B]. mask is 1 on
    policy-generated tokens only. entropy_coef may be traced (the adaptive controller drives it).
    Metrics, each (sum, count): loss, pg_loss, clip_frac_low/high (clip active, over counted tokens),
    approx_kl (k3 of old vs new: rho - 1 - log rho), cov_mean, entropy, kl_ref, frac_detached (Clip-Cov /
    KL-Cov picks), frac_masked and tis_weight_mean (mismatch), frac_kept (high-entropy selection).
    """
    logp, old_logp, advantages, mask = check_policy_loss_inputs(
        cfg, logp, old_logp, advantages, mask, rollout_logp=rollout_logp, ref_logp=ref_logp, entropy=entropy,
        key=key, entropy_coef=entropy_coef, max_len=max_len, selections=selections)

    valid = mask > 0
    m = valid.astype(jnp.float32)
    old = jax.lax.stop_gradient(jnp.where(valid, old_logp, 0.0))
    lp = jnp.where(valid, logp, 0.0)
    log_ratio = lp - old
    adv = advantages[:, None]
    n_valid = m.sum()

    if selections is None:
        selections = select_tokens(cfg, logp, old_logp, advantages, mask, entropy, key)
    cov, detached, kl_cov_sel, kept = selections
    pg, clip_low, clip_high = _pg_token_loss(cfg, log_ratio, lp, adv, m, kl_cov_sel)
    metrics: dict[str, Pair] = {}

    if cfg.covariance == "clip_cov":
        pg = jnp.where(detached, 0.0, pg)
        metrics["frac_detached"] = ((m * detached).sum(), n_valid)
    elif cfg.covariance == "kl_cov":
        metrics["frac_detached"] = ((m * kl_cov_sel).sum(), n_valid)

    if cfg.mismatch != "none":
        w_mis = mismatch_weights(old_logp, rollout_logp, mask, cfg.mismatch, cfg.mismatch_cap)
        pg = w_mis * pg
        if cfg.mismatch == "tis":
            metrics["tis_weight_mean"] = ((m * w_mis).sum(), n_valid)
        else:
            metrics["frac_masked"] = ((m * (w_mis == 0)).sum(), n_valid)

    kept = m * kept
    if cfg.entropy_top_frac < 1:
        metrics["frac_kept"] = (kept.sum(), n_valid)
    total = pg + _penalties(cfg, lp, valid, ref_logp, entropy, entropy_coef, metrics)

    loss_sum, denom = _aggregate(total, kept, cfg.aggregation, max_len)
    metrics["loss"] = (loss_sum, denom)
    metrics["pg_loss"] = _aggregate(pg, kept, cfg.aggregation, max_len)
    metrics.update(_ratio_metrics(log_ratio, m, kept, clip_low, clip_high, cov))
    metrics = {k: (jax.lax.stop_gradient(s), jax.lax.stop_gradient(c)) for k, (s, c) in metrics.items()}
    return loss_sum, denom, metrics


def _penalties(cfg: PolicyLossConfig, lp: jax.Array, valid: jax.Array, ref_logp: jax.Array | None,
               entropy: jax.Array | None, entropy_coef: jax.Array | float, metrics: dict[str, Pair]) -> jax.Array:
    """Per-token kl_coef * KL_ref (k1 = logp - ref, k3 = exp(ref - logp) - (ref - logp) - 1) minus
    entropy_coef * H, [B, T] (0 without kl and entropy); adds the kl_ref and entropy metrics."""
    m = valid.astype(jnp.float32)
    n_valid = m.sum()
    total = jnp.zeros(lp.shape, jnp.float32)
    if cfg.kl != "none":
        d = jnp.where(valid, ref_logp, 0.0) - lp
        kl_ref = -d if cfg.kl == "k1" else jnp.exp(d) - d - 1.0
        total = total + cfg.kl_coef * kl_ref
        metrics["kl_ref"] = ((m * kl_ref).sum(), n_valid)
    if entropy is not None:
        ent = jnp.where(valid, entropy, 0.0)
        total = total - entropy_coef * ent
        metrics["entropy"] = ((m * jax.lax.stop_gradient(ent)).sum(), n_valid)
    return total


def _ratio_metrics(log_ratio: jax.Array, m: jax.Array, kept: jax.Array, clip_low: jax.Array, clip_high: jax.Array,
                   cov: jax.Array) -> dict[str, Pair]:
    """Clip fractions over kept tokens, approx_kl (k3 of old vs new: rho - 1 - log rho) and cov_mean over
    valid tokens, as (sum, count) pairs."""
    n_kept, n_valid = kept.sum(), m.sum()
    sg_lr = jax.lax.stop_gradient(log_ratio)
    return {"clip_frac_low": ((kept * clip_low).sum(), n_kept), "clip_frac_high": ((kept * clip_high).sum(), n_kept),
            "approx_kl": ((m * (jnp.exp(sg_lr) - 1.0 - sg_lr)).sum(), n_valid), "cov_mean": (cov.sum(), n_valid)}
