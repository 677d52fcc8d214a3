"""The jitted, sharded RL update (DAPO and its variants via PolicyLossConfig) and the log-prob pass.

Every log-prob and entropy is taken at the rollout temperature T (softmax(logits / T)), the distribution
the sampler drew from before truncation (docs/algorithms.md, "Sampling temperature"). Per micro-batch:
the training forward gives logp and entropy of every taken token (token_stats, aligned to the token);
rl.policy_loss turns them, the batch's old/rollout log-probs and advantages into (loss_sum,
denominator, metric pairs). Sums are added over micro-batches and divided once; the update is skipped
when the loss or the gradient is non-finite. Token selections (Clip-Cov, KL-Cov, 80/20) are made once
over the whole update batch: with several micro-batches a gradient-free forward pass first scores every
token, so the selections and the gradient do not depend on `micro_batches`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vagent_jax.models.config import ModelConfig
from vagent_jax.rl.mismatch import mismatch_metrics
from vagent_jax.rl.policy_loss import PolicyLossConfig, Selections, needs_selections, policy_loss, select_tokens
from vagent_jax.sharding import batch_sharding
from vagent_jax.train.grad_accum import (accumulate_gradients, check_batch, divide, guarded_update,
                                         merge_micro_batches, split_micro_batches)
from vagent_jax.train.multihost import to_global
from vagent_jax.train.optimizer import OptimizerConfig, lr_schedule, make_optimizer
from vagent_jax.train.step_metrics import StepMetrics
from vagent_jax.train.token_stats import sequence_token_stats, unroll_layers_for
from vagent_jax.train.train_state import TrainState, param_shardings, state_shardings

RL_REQUIRED = ("tokens", "positions", "loss_mask", "advantages")
RL_OPTIONAL = ("segment_ids", "old_logp", "rollout_logp", "ref_logp")
PER_ROW = ("advantages",)
_SEL = "_selection_"  # prefix of the precomputed Selections carried inside a micro-batch

LOGPROB_KEYS = ("tokens", "positions", "segment_ids")


def _with_segments(batch: dict[str, Any]) -> dict[str, Any]:
    """Rows without segment_ids are one sequence each: all-ones ids give plain causal attention
    (host ones for a host batch, so multi-host runs can shard them like the other keys)."""
    out = dict(batch)
    if "segment_ids" not in out:
        ones = jnp.ones if isinstance(batch["tokens"], jax.Array) else np.ones
        out["segment_ids"] = ones(np.shape(batch["tokens"]), np.int32)
    return out


@dataclasses.dataclass(frozen=True)
class LogProbPass:
    """The jitted log-prob pass (make_compute_logprobs): `pass_(params, batch) -> (logp, entropy)` fp32 [B, T];
    `lower(params, batch)` lowers `jitted` for ahead-of-time compilation."""

    jitted: Any  # jax.jit(fn) with the mesh's shardings
    mesh: Mesh
    micro_batches: int
    batch_shardings: dict[str, NamedSharding]

    def _inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        sub = {k: batch[k] for k in LOGPROB_KEYS if k in batch}
        check_batch(sub, LOGPROB_KEYS[:2], LOGPROB_KEYS[2:], (), self.micro_batches, self.mesh, "logprob")
        return _with_segments(sub)

    def __call__(self, params: Any, batch: dict[str, Any]) -> tuple[jax.Array, jax.Array]:
        return self.jitted(params, to_global(self._inputs(batch), self.batch_shardings))

    def lower(self, params: Any, batch: dict[str, Any]) -> Any:
        """The pass lowered for these (abstract or concrete) inputs."""
        return self.jitted.lower(params, self._inputs(batch))


def make_compute_logprobs(model_cfg: ModelConfig, mesh: Mesh, micro_batches: int = 1, *, seq_chunk: int = 256,
                          temperature: float = 1.0, unroll_layers: bool | None = None) -> LogProbPass:
    """compute_logprobs(params, batch) -> (logp, entropy) at `temperature`, fp32 [B, T] aligned to the token
    (0 where no prediction exists), for old_logp / ref_logp. batch: tokens, positions, optional segment_ids;
    any other keys are ignored. Runs micro-batch by micro-batch (lax.map) to bound activation memory.
    unroll_layers: None = `unroll_layers_for(mesh)`."""
    unroll = unroll_layers_for(mesh) if unroll_layers is None else unroll_layers
    p_shard = param_shardings(model_cfg, mesh)
    b_shard = {k: batch_sharding(mesh, 2) for k in LOGPROB_KEYS}
    out_shard = batch_sharding(mesh, 2)

    def fn(params, batch):
        micro = split_micro_batches(batch, micro_batches, mesh)

        def one(mb):
            lp, ent, _ = sequence_token_stats(params, mb["tokens"], mb["positions"], mb["segment_ids"],
                                              cfg=model_cfg, seq_chunk=seq_chunk, temperature=temperature,
                                              unroll_layers=unroll)
            return lp, ent

        lp, ent = jax.lax.map(one, micro)
        return merge_micro_batches(lp), merge_micro_batches(ent)

    jitted = jax.jit(fn, in_shardings=(p_shard, b_shard), out_shardings=(out_shard, out_shard))
    return LogProbPass(jitted, mesh, micro_batches, b_shard)


def _batch_selections(params: Any, micro: dict[str, jax.Array], key: jax.Array, loss_cfg: PolicyLossConfig,
                      stats: Callable[..., Any]) -> dict[str, jax.Array]:
    """Selections of the whole update batch from a gradient-free forward over its micro-batches, returned
    split like `micro` (keys _SEL + field name)."""
    lp, ent, valid = jax.lax.map(lambda mb: stats(params, mb), micro)
    lp, ent, valid = (merge_micro_batches(x) for x in (lp, ent, valid))
    full = {k: merge_micro_batches(v) for k, v in micro.items()}
    mask = valid & (full["loss_mask"] > 0)
    old = full["old_logp"] if "old_logp" in full else lp
    sel = select_tokens(loss_cfg, lp, old, full["advantages"], mask, ent, key)
    return {_SEL + k: jax.lax.stop_gradient(v) for k, v in sel._asdict().items()}


def _unpack_selections(mb: dict[str, jax.Array]) -> Selections | None:
    if _SEL + "cov" not in mb:
        return None
    return Selections(*(mb[_SEL + f] for f in Selections._fields))


def _covariance_pairs(logp: jax.Array, adv: jax.Array, mask: jax.Array) -> dict[str, tuple[jax.Array, jax.Array]]:
    """Sums of logp*A, logp and A over counted tokens: Cov = E[logp A] - E[logp] E[A] from sums that add."""
    m = mask.astype(jnp.float32)
    lp = jax.lax.stop_gradient(jnp.where(mask, logp, 0.0))
    a = jnp.broadcast_to(adv[:, None], lp.shape) * m
    n = m.sum()
    return {"_cov_lp_adv": ((lp * a).sum(), n), "_cov_lp": (lp.sum(), n), "_cov_adv": (a.sum(), n)}


def _covariance_metric(pairs: dict[str, tuple[jax.Array, jax.Array]]) -> tuple[jax.Array, jax.Array]:
    """(n * Cov(logp, A), n) over the whole update batch, from `_covariance_pairs` added over micro-batches."""
    (s_la, n), (s_l, _), (s_a, _) = pairs.pop("_cov_lp_adv"), pairs.pop("_cov_lp"), pairs.pop("_cov_adv")
    cov = divide(s_la, n) - divide(s_l, n) * divide(s_a, n)
    return cov * n, n


def _micro_loss(params: Any, mb: dict[str, jax.Array], key: jax.Array, entropy_coef: jax.Array, ref_params: Any, *,
                stats: Callable[..., Any], loss_cfg: PolicyLossConfig, max_len: int | None) -> tuple[jax.Array, Any]:
    """One micro-batch's (loss_sum, (denominator, pairs, maxima, (entropy, mask))) for accumulate_gradients."""
    logp, ent, valid = stats(params, mb)
    mask = valid & (mb["loss_mask"] > 0)
    old = mb["old_logp"] if "old_logp" in mb else jax.lax.stop_gradient(logp)
    ref = mb.get("ref_logp")
    if ref_params is not None:
        ref = jax.lax.stop_gradient(stats(ref_params, mb)[0])
    rollout = mb.get("rollout_logp")
    loss_sum, den, pairs = policy_loss(
        logp, old, mb["advantages"], mask, cfg=loss_cfg, rollout_logp=rollout, ref_logp=ref,
        entropy=ent, key=key, entropy_coef=entropy_coef, max_len=max_len, selections=_unpack_selections(mb))
    pairs = {**pairs, **_covariance_pairs(logp, mb["advantages"], mask)}
    maxima = {}
    if rollout is not None:
        mm = mismatch_metrics(jax.lax.stop_gradient(old), rollout, mask)
        pairs = {**pairs, **{f"mismatch_{k}": v for k, v in mm.means.items()}}
        maxima = {f"mismatch_{k}": v for k, v in mm.maxima.items()}
    return loss_sum, (den, pairs, maxima, (jax.lax.stop_gradient(ent), mask))


def _step_metrics(acc: Any, upd: dict[str, jax.Array]) -> StepMetrics:
    """StepMetrics of one update from the accumulated micro-batch sums and the optimizer update's metrics."""
    pairs = dict(acc.pairs)
    pairs["cov_mean"] = _covariance_metric(pairs)
    pairs["loss"] = (acc.loss_sum, acc.denominator)
    one = jnp.float32(1.0)
    pairs.update(grad_norm=(upd["grad_norm"], one), lr=(upd["lr"], one))
    totals = {"tokens": pairs["entropy"][1], "skipped": upd["skipped"], "updates": one}
    ent, mask = (merge_micro_batches(x) for x in acc.outputs)
    return StepMetrics(pairs, dict(acc.maxima), totals, ent, mask)


@dataclasses.dataclass(frozen=True)
class RLStep:
    """The jitted RL update (make_rl_step): `step(state, batch, key, entropy_coef=0.0, ref_params=None)`;
    `jitted(batch, ref_params)` is the compiled program for that batch's keys (built on first use, one per
    set of keys and with/without ref_params); `lower(...)` lowers it for ahead-of-time compilation."""

    loss_cfg: PolicyLossConfig
    mesh: Mesh
    micro_batches: int
    build: Callable[[tuple[str, ...], bool], Any]  # (sorted batch keys, with_ref) -> jax.jit program
    programs: dict = dataclasses.field(default_factory=dict, compare=False)  # built programs by signature

    def _prepare(self, batch: dict[str, Any], ref_params: Any) -> tuple[Any, dict[str, Any]]:
        check_batch(batch, RL_REQUIRED, RL_OPTIONAL, PER_ROW, self.micro_batches, self.mesh, "RL")
        if self.loss_cfg.mismatch != "none" and "rollout_logp" not in batch:
            raise ValueError(f"RL batch: loss mismatch '{self.loss_cfg.mismatch}' needs batch['rollout_logp']")
        if self.loss_cfg.kl != "none" and ref_params is None and "ref_logp" not in batch:
            raise ValueError(f"RL batch: kl '{self.loss_cfg.kl}' needs ref_params or batch['ref_logp']")
        full = _with_segments(batch)
        full = to_global(full, {k: batch_sharding(self.mesh, 1 if k in PER_ROW else 2) for k in full})
        sig = (tuple(sorted(full)), ref_params is not None)
        if sig not in self.programs:
            self.programs[sig] = self.build(*sig)
        return self.programs[sig], full

    def jitted(self, batch: dict[str, Any], ref_params: Any = None) -> Any:
        """The jax.jit program that runs this batch (its keys, with or without ref_params)."""
        return self._prepare(batch, ref_params)[0]

    def __call__(self, state: TrainState, batch: dict[str, Any], key: jax.Array, entropy_coef: Any = 0.0,
                 ref_params: Any = None) -> tuple[TrainState, StepMetrics]:
        fn, full = self._prepare(batch, ref_params)
        return fn(state, full, key, jnp.asarray(entropy_coef, jnp.float32), ref_params)

    def lower(self, state: Any, batch: dict[str, Any], key: Any, entropy_coef: Any = 0.0, ref_params: Any = None) -> Any:
        """Lower the step for these (abstract or concrete) inputs, for ahead-of-time compilation."""
        fn, full = self._prepare(batch, ref_params)
        return fn.lower(state, full, key, jnp.asarray(entropy_coef, jnp.float32), ref_params)


def make_rl_step(model_cfg: ModelConfig, optimizer: OptimizerConfig, loss_cfg: PolicyLossConfig, mesh: Mesh,
                 micro_batches: int = 1, *, max_len: int | None = None, temperature: float = 1.0,
                 seq_chunk: int = 256, unroll_layers: bool | None = None) -> RLStep:
    """rl_step(state, batch, key, entropy_coef, ref_params=None) -> (state, StepMetrics), jitted with the
    mesh's shardings and the state donated (one compiled variant per set of batch keys).

    batch: tokens, positions, loss_mask (1 on policy-generated tokens only; tool observations 0) [B, T],
    advantages [B]; optional segment_ids, old_logp (absent: exact on-policy, old = detached logp),
    rollout_logp (the sampler's; needed by loss_cfg.mismatch, enables mismatch metrics), ref_logp
    [B, T]. ref_params, when given, supplies ref_logp by a forward of the reference policy. key: PRNG
    key (Clip-Cov's random picks). entropy_coef: scalar (may change per step without recompiling).
    temperature: the rollout temperature (> 0) every log-prob and entropy is taken at. max_len: the
    generation limit L_max on generated tokens, required by aggregation 'seq_sum_const'. unroll_layers:
    unrolled layer loop in the forward and backward (None = `unroll_layers_for(mesh)`: on CPU).
    Multi-host: batch holds the whole global batch (host arrays on every process, or global jax.Arrays).
    StepMetrics pairs: every policy_loss metric (loss, pg_loss, clip fractions, approx_kl, entropy, ...),
    cov_mean over the whole batch, mismatch_* when rollout_logp is given, grad_norm and lr (count 1);
    maxima: mismatch_max_ratio; totals: tokens, skipped, updates; token entropies for percentiles.
    """
    loss_cfg.validate()
    if micro_batches < 1:
        raise ValueError(f"micro_batches must be >= 1, got {micro_batches}")
    if loss_cfg.aggregation == "seq_sum_const" and (max_len is None or max_len <= 0):
        raise ValueError(f"aggregation 'seq_sum_const' needs max_len > 0 (the generation limit), got {max_len}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (the rollout temperature of the tokens), got {temperature}")
    tx = make_optimizer(optimizer)
    lr_fn = lr_schedule(optimizer)
    s_shard = state_shardings(model_cfg, mesh, optimizer)
    replicated = NamedSharding(mesh, PartitionSpec())
    presel = micro_batches > 1 and needs_selections(loss_cfg)
    unroll = unroll_layers_for(mesh) if unroll_layers is None else unroll_layers

    def stats(params, mb):
        return sequence_token_stats(params, mb["tokens"], mb["positions"], mb["segment_ids"], cfg=model_cfg,
                                    seq_chunk=seq_chunk, temperature=temperature, unroll_layers=unroll)

    def build(keys: tuple[str, ...], with_ref: bool) -> Any:
        def step(state, batch, key, entropy_coef, ref_params):
            micro = split_micro_batches(batch, micro_batches, mesh)
            if presel:
                micro = {**micro, **split_micro_batches(
                    _batch_selections(state.params, micro, key, loss_cfg, stats), micro_batches, mesh)}
            loss_fn = lambda p, mb, i: _micro_loss(p, mb, key, entropy_coef, ref_params, stats=stats,  # noqa: E731
                                                   loss_cfg=loss_cfg, max_len=max_len)
            acc = accumulate_gradients(loss_fn, state.params, micro, s_shard.params)
            loss = divide(acc.loss_sum, acc.denominator)
            grads = jax.tree.map(lambda g: divide(g, acc.denominator), acc.grads)
            new_state, upd = guarded_update(state, grads, loss, tx, lr_fn)
            return new_state, _step_metrics(acc, upd)

        b_shard = {k: batch_sharding(mesh, 1 if k in PER_ROW else 2) for k in keys}
        ref_shard = s_shard.params if with_ref else None
        return jax.jit(step, in_shardings=(s_shard, b_shard, replicated, replicated, ref_shard),
                       out_shardings=(s_shard, replicated), donate_argnums=0)

    return RLStep(loss_cfg, mesh, micro_batches, build)
