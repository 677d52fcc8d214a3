"""Pallas kernel of the fused sampling op: one pass over vocabulary tiles, no [B, V] float32 arrays.

Grid (row blocks, vocab tiles); the vocab axis is sequential ("arbitrary") and the per-row state lives in
output blocks that stay resident across it (written at tile 0, updated every tile):
  m1, s1          online max and sum exp(x - m1)                 -> logsumexp at T = 1
  mt, st, wt      online max of z = x/T, sum e = exp(z - mt), sum e (z - mt)  -> H = log st - wt / st
  sa              sum of e over admitted tokens (x >= tau)        -> log-normaliser of the sampling dist.
  top_vals/ids    running top-K of x (K = max(conf_k, num_top_logprobs), stored in K_pad = 128k lanes)
  bad             NaN / +inf seen
The running top-K merge (`_merge_top_k`) extracts, per tile, one maximum per round while some row still has
a tile value above its current K-th best; the round count is bounded by K and, after the first tiles, is
usually small.
The truncation threshold tau comes from the pre-pass shared with the reference (`admission_threshold`),
which touches the logits only when some row truncates (max for min-p; top-256 candidates, rarely a sort,
for top-k/top-p). The token is drawn after the kernel by the reference's own `draw_tokens` (inverse CDF,
one uniform per row) from the kernel's exact row max and tau, so tokens match the reference exactly; on
sampling rows that draw reads the logits once more (a class-sum pass plus a gather of one class).
Targets: Mosaic (TPU) and interpret mode. Not Triton/GPU: the accumulation needs a sequential vocab axis.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from vagent_jax.kernels.sampling_draw import choose_tokens
from vagent_jax.kernels.sampling_reference import (
    SampleOutput, admission_threshold, argmax_of_top, finish, inverse_temperature,
)
from vagent_jax.kernels.sampling_seeds import row_seeds

_NEG = -jnp.inf
_BIG_INDEX = 2**31 - 1


def _round_up(n: int, m: int) -> int:
    return (n + m - 1) // m * m


def _merge_top_k(x: jax.Array, col: jax.Array, vals: jax.Array, ids: jax.Array,
                 top_k_slots: int) -> tuple[jax.Array, jax.Array]:
    """The running top-K of x after one tile: (vals, ids) [rows, K_pad] with the first top_k_slots lanes live.

    Each round moves the tile's maximum into the slot of the row's current K-th best while it beats it
    (lowest ids win ties, as in the reference); the round count is the most tile values any row has
    above its K-th best, at most K, and after the first tiles usually small. x, col: [rows, block_v]."""
    slots = vals.shape[1]
    lane = jax.lax.broadcasted_iota(jnp.int32, vals.shape, 1)
    slot_ok = lane < top_k_slots

    def kth_best(v):
        return jnp.min(jnp.where(slot_ok, v, jnp.inf), axis=1, keepdims=True)

    above = jnp.sum((x > kth_best(vals)).astype(jnp.int32), axis=1, keepdims=True)
    rounds = jnp.max(jnp.minimum(above, top_k_slots))

    def merge_one(_, carry):
        xt, vals, ids = carry
        low = kth_best(vals)
        # evict, among slots tied at the K-th value, the one with the largest id (lowest ids win ties)
        tied = slot_ok & (vals == low)
        evict_id = jnp.max(jnp.where(tied, ids, -1), axis=1, keepdims=True)
        low_pos = jnp.min(jnp.where(tied & (ids == evict_id), lane, slots), axis=1, keepdims=True)
        t_max = jnp.max(xt, axis=1, keepdims=True)
        t_pos = jnp.min(jnp.where(xt == t_max, col, _BIG_INDEX), axis=1, keepdims=True)
        take = t_max > low
        put = take & (lane == low_pos)
        vals = jnp.where(put, t_max, vals)
        ids = jnp.where(put, t_pos, ids)
        xt = jnp.where(take & (col == t_pos), _NEG, xt)
        return xt, vals, ids

    _, vals, ids = jax.lax.fori_loop(0, rounds, merge_one, (x, vals, ids))
    return vals, ids


def _init_state(refs: tuple, rows: int) -> None:
    """Tile 0: the resident per-row state starts empty (maxima -inf, sums 0, top-K -inf)."""
    m1, s1, mt, st, wt, sa, bad, tv, ti = refs
    for ref in (m1, mt):
        ref[...] = jnp.full((rows, 1), _NEG, jnp.float32)
    for ref in (s1, st, wt, sa):
        ref[...] = jnp.zeros((rows, 1), jnp.float32)
    bad[...] = jnp.zeros((rows, 1), jnp.int32)
    tv[...] = jnp.full(tv.shape, _NEG, jnp.float32)
    ti[...] = jnp.zeros(ti.shape, jnp.int32)


def _sampling_kernel(
    inv_t_ref, tau_ref, x_ref,  # inputs
    m1_ref, s1_ref, mt_ref, st_ref, wt_ref, sa_ref, bad_ref, tv_ref, ti_ref,  # outputs (resident state)
    *, vocab: int, block_v: int, top_k_slots: int,
):
    """One (row block, vocab tile) step of the online statistics; see the module docstring."""
    j = pl.program_id(1)
    rows = x_ref.shape[0]

    @pl.when(j == 0)
    def _init():
        _init_state((m1_ref, s1_ref, mt_ref, st_ref, wt_ref, sa_ref, bad_ref, tv_ref, ti_ref), rows)

    col = j * block_v + jax.lax.broadcasted_iota(jnp.int32, (rows, block_v), 1)
    x = x_ref[...].astype(jnp.float32)
    x = jnp.where(col < vocab, x, _NEG)  # the last tile may run past V
    live = x > _NEG
    bad_ref[...] = jnp.maximum(
        bad_ref[...], jnp.max(((x != x) | (x == jnp.inf)).astype(jnp.int32), axis=1, keepdims=True))

    # logsumexp at T = 1
    m_old = m1_ref[...]
    m_new = jnp.maximum(m_old, jnp.max(x, axis=1, keepdims=True))
    m_safe = jnp.where(m_new == _NEG, 0.0, m_new)
    s1_ref[...] = s1_ref[...] * jnp.exp(m_old - m_safe) + jnp.sum(jnp.exp(x - m_safe), axis=1, keepdims=True)
    m1_ref[...] = m_new

    # tempered statistics: entropy and the admitted normaliser
    inv_t = inv_t_ref[...]
    z = x * inv_t
    mt_old = mt_ref[...]
    mt_new = jnp.maximum(mt_old, jnp.max(z, axis=1, keepdims=True))
    mt_safe = jnp.where(mt_new == _NEG, 0.0, mt_new)
    alpha = jnp.exp(mt_old - mt_safe)
    e = jnp.exp(z - mt_safe)
    d = jnp.where(live, z - mt_safe, 0.0)
    st_old = st_ref[...]
    shift = jnp.where(st_old > 0.0, st_old * (mt_old - mt_safe), 0.0)
    wt_ref[...] = alpha * (wt_ref[...] + shift) + jnp.sum(e * d, axis=1, keepdims=True)
    st_ref[...] = alpha * st_old + jnp.sum(e, axis=1, keepdims=True)
    admitted = live & (x >= tau_ref[...])
    sa_ref[...] = alpha * sa_ref[...] + jnp.sum(jnp.where(admitted, e, 0.0), axis=1, keepdims=True)
    mt_ref[...] = mt_new

    tv_ref[...], ti_ref[...] = _merge_top_k(x, col, tv_ref[...], ti_ref[...], top_k_slots)


class PassStats(NamedTuple):
    """Per-row results of the kernel pass ([B] unless noted), before `finish` turns them into outputs."""

    lse1: jax.Array  # logsumexp of x at T = 1
    entropy: jax.Array  # H(softmax(x * inv_t))
    lse_admitted: jax.Array  # logsumexp of x * inv_t over admitted tokens
    max1: jax.Array  # max of x (the exact row max: a max does not depend on the tile order)
    bad: jax.Array  # bool, NaN / +inf seen or no finite logit
    top_vals: jax.Array  # [B, K_pad] running top-K of x (-inf padded)
    top_ids: jax.Array  # [B, K_pad] int32


@functools.partial(jax.jit, static_argnames=("top_slots", "interpret", "block_b", "block_v"))
def fused_sampling_pass(
    logits: jax.Array,
    inv_t: jax.Array,
    tau: jax.Array,
    *,
    top_slots: int,
    interpret: bool = False,
    block_b: int = 8,
    block_v: int = 2048,
) -> PassStats:
    """The Pallas pass: logits [B, V] (bf16/f32) and per-row inv_t, tau (f32).

    block_v must be a multiple of 128 (TPU lane tiling); block_b is used as is when B >= block_b (then
    a multiple of 8 on TPU) and shrinks to B for smaller batches. top_slots = K of the running top-K.
    """
    if block_v % 128:
        raise ValueError(f"block_v={block_v} must be a multiple of 128")
    batch, vocab = logits.shape
    rows = min(block_b, batch)
    slots = _round_up(top_slots, 128)
    tile_v = min(block_v, _round_up(vocab, 128))
    grid = (pl.cdiv(batch, rows), pl.cdiv(vocab, tile_v))
    col1 = lambda a: a.reshape(batch, 1)  # noqa: E731  [B] -> [B, 1] blocks

    row_spec = pl.BlockSpec((rows, 1), lambda i, j: (i, 0))
    top_spec = pl.BlockSpec((rows, slots), lambda i, j: (i, 0))
    # inside shard_map the outputs vary over the same manual mesh axes as the logits
    out = functools.partial(jax.ShapeDtypeStruct, manual_axis_type=jax.typeof(logits).mat)
    f32, i32 = jnp.float32, jnp.int32
    out_shape = [out((batch, 1), f32)] * 6 + [out((batch, 1), i32)]
    out_shape += [out((batch, slots), f32), out((batch, slots), i32)]
    kernel = functools.partial(_sampling_kernel, vocab=vocab, block_v=tile_v, top_k_slots=top_slots)
    outs = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=grid,
        in_specs=[row_spec] * 2 + [pl.BlockSpec((rows, tile_v), lambda i, j: (i, j))],
        out_specs=[row_spec] * 7 + [top_spec] * 2,
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "arbitrary")),
        interpret=interpret,
        name="fused_sampling",
    )(col1(inv_t), col1(tau), logits)
    m1, s1, mt, st, wt, sa, bad, top_vals, top_ids = outs
    m1, s1, mt, st, wt, sa = (a[:, 0] for a in (m1, s1, mt, st, wt, sa))
    return PassStats(
        lse1=m1 + jnp.log(s1),
        entropy=jnp.log(st) - wt / st,
        lse_admitted=mt + jnp.log(sa),
        max1=m1,
        # a row without finite logits never sets `bad` in the kernel: its running max stays -inf
        bad=(bad[:, 0] > 0) | (m1 == _NEG),
        top_vals=top_vals,
        top_ids=top_ids,
    )


@functools.partial(
    jax.jit, static_argnames=("conf_k", "num_top_logprobs", "interpret", "block_b", "block_v"))
def sample_pallas(
    logits: jax.Array,
    key: jax.Array,
    temperature: jax.Array,
    top_k: jax.Array,
    top_p: jax.Array,
    min_p: jax.Array,
    *,
    conf_k: int = 20,
    num_top_logprobs: int = 0,
    interpret: bool = False,
    block_b: int = 8,
    block_v: int = 2048,
    row_seed: jax.Array | None = None,
) -> SampleOutput:
    """Same contract as `sample_reference`: the shared pre-pass (threshold, seeds), then one kernel pass.
    row_seed [B] uint32, when given, replaces row_seeds(key, B).

    The pre-pass reads the logits again only when some row truncates (see admission_threshold).
    """
    greedy, inv_t = inverse_temperature(temperature)
    x = logits.astype(jnp.float32)
    tau = admission_threshold(x, temperature, top_k, top_p, min_p)
    seeds = row_seeds(key, logits.shape[0]) if row_seed is None else row_seed.astype(jnp.uint32)
    stats = fused_sampling_pass(
        logits, inv_t, tau, top_slots=max(conf_k, num_top_logprobs),
        interpret=interpret, block_b=block_b, block_v=block_v)
    argmax = argmax_of_top(stats.top_vals, stats.top_ids)
    m = jnp.where(stats.bad, 0.0, stats.max1)
    token = choose_tokens(x, greedy, inv_t, tau, m, seeds, argmax)
    x_tok = jnp.take_along_axis(x, token[:, None], axis=-1)[:, 0]
    return finish(
        token=token, x_tok=x_tok, lse1=stats.lse1, entropy=stats.entropy,
        lse_admitted=stats.lse_admitted, top_vals=stats.top_vals, top_ids=stats.top_ids, greedy=greedy,
        inv_t=inv_t, bad=stats.bad, conf_k=conf_k, num_top_logprobs=num_top_logprobs,
    )
