"""The jitted, sharded RL update (DAPO and its variants via PolicyLossConfig) and the log-prob pass.

Per micro-batch: the training forward gives logp and entropy of every taken token (token_stats,
aligned to the token); rl.policy_loss turns them, the batch's old/rollout log-probs and advantages into
(loss_sum, denominator, metric pairs). Sums are added over micro-batches and divided once; the update
is skipped when the loss or the gradient is non-finite. Entropy mean and p10/p50/p90 over the valid
tokens of the whole batch come from the same training forward.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vagent_jax.models.config import ModelConfig
from vagent_jax.rl.mismatch import mismatch_metrics
from vagent_jax.rl.policy_loss import PolicyLossConfig, policy_loss
from vagent_jax.sharding import batch_sharding
from vagent_jax.train.grad_accum import (accumulate_gradients, check_batch, divide, guarded_update,
                                         merge_micro_batches, split_micro_batches)
from vagent_jax.train.multihost import to_global
from vagent_jax.train.optimizer import OptimizerConfig, lr_schedule, make_optimizer
from vagent_jax.train.token_stats import sequence_token_stats
from vagent_jax.train.train_state import TrainState, param_shardings, state_shardings

RL_REQUIRED = ("tokens", "positions", "loss_mask", "advantages")
RL_OPTIONAL = ("segment_ids", "old_logp", "rollout_logp", "ref_logp")
PER_ROW = ("advantages",)
ENTROPY_PERCENTILES = (10, 50, 90)

RLStepFn = Callable[..., tuple[TrainState, dict[str, jax.Array]]]


def _with_segments(batch: dict[str, Any]) -> dict[str, Any]:
    """Rows without segment_ids are one sequence each: all-ones ids give plain causal attention
    (host ones for a host batch, so multi-host runs can shard them like the other keys)."""
    out = dict(batch)
    if "segment_ids" not in out:
        ones = jnp.ones if isinstance(batch["tokens"], jax.Array) else np.ones
        out["segment_ids"] = ones(np.shape(batch["tokens"]), np.int32)
    return out


def make_compute_logprobs(model_cfg: ModelConfig, mesh: Mesh, micro_batches: int = 1, *,
                          seq_chunk: int = 256) -> Callable[[Any, dict[str, Any]], tuple[jax.Array, jax.Array]]:
    """compute_logprobs(params, batch) -> (logp, entropy), fp32 [B, T] aligned to the token (0 where no
    prediction exists), for old_logp / ref_logp. batch: tokens, positions, optional segment_ids; any
    other keys are ignored. Runs micro-batch by micro-batch (lax.map) to bound activation memory."""
    p_shard = param_shardings(model_cfg, mesh)
    keys = ("tokens", "positions", "segment_ids")
    b_shard = {k: batch_sharding(mesh, 2) for k in keys}
    out_shard = batch_sharding(mesh, 2)

    def fn(params, batch):
        micro = split_micro_batches(batch, micro_batches, mesh)

        def one(mb):
            lp, ent, _ = sequence_token_stats(params, mb["tokens"], mb["positions"], mb["segment_ids"],
                                              cfg=model_cfg, seq_chunk=seq_chunk)
            return lp, ent

        lp, ent = jax.lax.map(one, micro)
        return merge_micro_batches(lp), merge_micro_batches(ent)

    jitted = jax.jit(fn, in_shardings=(p_shard, b_shard), out_shardings=(out_shard, out_shard))

    def compute_logprobs(params: Any, batch: dict[str, Any]) -> tuple[jax.Array, jax.Array]:
        sub = {k: batch[k] for k in keys if k in batch}
        check_batch(sub, keys[:2], keys[2:], (), micro_batches, mesh, "logprob")
        return jitted(params, to_global(_with_segments(sub), b_shard))

    compute_logprobs.jitted = jitted  # type: ignore[attr-defined]
    return compute_logprobs


def entropy_percentiles(entropy: jax.Array, valid: jax.Array) -> dict[str, jax.Array]:
    """entropy_p10/p50/p90 over the valid tokens (linear interpolation, numpy's default); NaN if none."""
    vals = jnp.where(valid, entropy, jnp.nan).reshape(-1)
    qs = jnp.nanpercentile(vals, jnp.asarray(ENTROPY_PERCENTILES, jnp.float32))
    return {f"entropy_p{q}": qs[i] for i, q in enumerate(ENTROPY_PERCENTILES)}


def make_rl_step(model_cfg: ModelConfig, optimizer: OptimizerConfig, loss_cfg: PolicyLossConfig, mesh: Mesh,
                 micro_batches: int = 1, *, max_len: int | None = None, seq_chunk: int = 256) -> RLStepFn:
    """rl_step(state, batch, key, entropy_coef, ref_params=None) -> (state, metrics), jitted with the
    mesh's shardings and the state donated (one compiled variant per set of batch keys).

    batch: tokens, positions, loss_mask (1 on policy-generated tokens only; tool observations 0) [B, T],
    advantages [B]; optional segment_ids, old_logp (absent: exact on-policy, old = detached logp),
    rollout_logp (the sampler's; needed by loss_cfg.mismatch, enables mismatch metrics), ref_logp
    [B, T]. ref_params, when given, supplies ref_logp by a forward of the reference policy. key: PRNG
    key (Clip-Cov picks; micro-batch i uses fold_in(key, i)). entropy_coef: scalar (may change per step
    without recompiling). max_len: the generation limit, required by aggregation 'seq_sum_const'.
    Multi-host: batch holds the whole global batch (host arrays on every process, or global jax.Arrays).
    Metrics: every policy_loss metric divided (loss, pg_loss, clip fractions, approx_kl, cov_mean,
    entropy, ...), mismatch_* when rollout_logp is given, entropy_p10/p50/p90, tokens, grad_norm, lr,
    skipped. Selections inside policy_loss (Clip-Cov, KL-Cov, top-entropy) are per micro-batch.
    """
    loss_cfg.validate()
    if micro_batches < 1:
        raise ValueError(f"micro_batches must be >= 1, got {micro_batches}")
    if loss_cfg.aggregation == "seq_sum_const" and (max_len is None or max_len <= 0):
        raise ValueError(f"aggregation 'seq_sum_const' needs max_len > 0 (the generation limit), got {max_len}")
    tx = make_optimizer(optimizer)
    lr_fn = lr_schedule(optimizer)
    s_shard = state_shardings(model_cfg, mesh, optimizer)
    replicated = NamedSharding(mesh, PartitionSpec())
    variants: dict[tuple[tuple[str, ...], bool], Any] = {}

    def build(keys: tuple[str, ...], with_ref: bool) -> Any:
        def micro_loss(params, mb, i, key, entropy_coef, ref_params):
            logp, ent, valid = sequence_token_stats(params, mb["tokens"], mb["positions"], mb["segment_ids"],
                                                    cfg=model_cfg, seq_chunk=seq_chunk)
            mask = valid & (mb["loss_mask"] > 0)
            old = mb["old_logp"] if "old_logp" in mb else jax.lax.stop_gradient(logp)
            ref = mb.get("ref_logp")
            if ref_params is not None:
                ref, _, _ = sequence_token_stats(ref_params, mb["tokens"], mb["positions"], mb["segment_ids"],
                                                 cfg=model_cfg, seq_chunk=seq_chunk)
                ref = jax.lax.stop_gradient(ref)
            rollout = mb.get("rollout_logp")
            loss_sum, den, pairs = policy_loss(
                logp, old, mb["advantages"], mask, cfg=loss_cfg, rollout_logp=rollout, ref_logp=ref,
                entropy=ent, key=jax.random.fold_in(key, i), entropy_coef=entropy_coef, max_len=max_len)
            maxima = {}
            if rollout is not None:
                mm = mismatch_metrics(jax.lax.stop_gradient(old), rollout, mask)
                pairs = {**pairs, **{f"mismatch_{k}": v for k, v in mm.means.items()}}
                maxima = {f"mismatch_{k}": v for k, v in mm.maxima.items()}
            pairs = {**pairs, "tokens": (mask.sum().astype(jnp.float32), jnp.float32(1.0))}
            return loss_sum, (den, pairs, maxima, (jax.lax.stop_gradient(ent), mask))

        def step(state, batch, key, entropy_coef, ref_params):
            micro = split_micro_batches(batch, micro_batches, mesh)
            loss_fn = lambda p, mb, i: micro_loss(p, mb, i, key, entropy_coef, ref_params)  # noqa: E731
            acc = accumulate_gradients(loss_fn, state.params, micro, s_shard.params)
            loss = divide(acc.loss_sum, acc.denominator)
            grads = jax.tree.map(lambda g: divide(g, acc.denominator), acc.grads)
            new_state, upd = guarded_update(state, grads, loss, tx, lr_fn)
            metrics = {k: divide(s, c) for k, (s, c) in acc.pairs.items() if k != "tokens"}
            metrics.update(acc.maxima)
            metrics["loss"] = loss
            metrics["tokens"] = acc.pairs["tokens"][0]
            metrics.update(entropy_percentiles(*acc.outputs))
            metrics.update(upd)
            return new_state, metrics

        b_shard = {k: batch_sharding(mesh, 1 if k in PER_ROW else 2) for k in keys}
        ref_shard = s_shard.params if with_ref else None
        return jax.jit(step, in_shardings=(s_shard, b_shard, replicated, replicated, ref_shard),
                       out_shardings=(s_shard, replicated), donate_argnums=0)

    def variant(batch: dict[str, Any], ref_params: Any) -> tuple[Any, dict[str, Any]]:
        check_batch(batch, RL_REQUIRED, RL_OPTIONAL, PER_ROW, micro_batches, mesh, "RL")
        if loss_cfg.mismatch != "none" and "rollout_logp" not in batch:
            raise ValueError(f"RL batch: loss mismatch '{loss_cfg.mismatch}' needs batch['rollout_logp']")
        if loss_cfg.kl != "none" and ref_params is None and "ref_logp" not in batch:
            raise ValueError(f"RL batch: kl '{loss_cfg.kl}' needs ref_params or batch['ref_logp']")
        full = _with_segments(batch)
        full = to_global(full, {k: batch_sharding(mesh, 1 if k in PER_ROW else 2) for k in full})
        sig = (tuple(sorted(full)), ref_params is not None)
        if sig not in variants:
            variants[sig] = build(*sig)
        return variants[sig], full

    def rl_step(state: TrainState, batch: dict[str, Any], key: jax.Array, entropy_coef: Any = 0.0,
                ref_params: Any = None) -> tuple[TrainState, dict[str, jax.Array]]:
        fn, full = variant(batch, ref_params)
        return fn(state, full, key, jnp.asarray(entropy_coef, jnp.float32), ref_params)

    def lower(state: Any, batch: dict[str, Any], key: Any, entropy_coef: Any = 0.0, ref_params: Any = None) -> Any:
        """Lower the step for these (abstract or concrete) inputs, for ahead-of-time compilation."""
        fn, full = variant(batch, ref_params)
        return fn.lower(state, full, key, jnp.asarray(entropy_coef, jnp.float32), ref_params)

    rl_step.lower = lower  # type: ignore[attr-defined]
    return rl_step
