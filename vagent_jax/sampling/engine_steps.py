"""Device side of the decode engine: the slot state pytree and the two jitted programs on it.

Slot state (B slots, S cache positions), all on device:
  cache {k, v} [L, B, S, Hkv, hd]; last [B] the sampled token not yet in the cache, at position pos [B];
  tokens/logprob/sample_logprob/entropy/confidence [B, S] indexed by position; gen_mask [B, S] (1 where the
  policy generated the token); active [B]; reason [B] (why a slot stopped, see REASONS); turn_len [B] and
  n_gen [B] (tokens generated this turn / in the whole trajectory); gen_conf [B, S] confidences indexed by
  generation index and win_sum [B] (sum over the last `window` of them) for DeepConf online stopping;
  threshold [B] (-inf = off); seed [B] uint32 the request seed of the slot's trajectory.
Sampling noise: the token at position t of a request is drawn with row seed
position_seeds(bits(key), request seed, t), so it does not depend on the slot, the batch or the call
that decodes it (the engine passes the same key on every call).
`prefill` writes prompt or observation tokens of some slots into the cache and samples the next token;
`decode_chunk` runs n single-token steps for all slots, writes only active rows, and stops rows on EOS,
stop sequences, per-turn budget, cache end, DeepConf confidence or non-finite logits.
`prefill_jit` / `decode_chunk_jit` are their module-level jitted forms (state donated): engines with the same
static settings (model config, conf_k, impl, chunk steps) and shapes share compiled programs.
On a mesh (`mesh_programs`), the state is sharded by the run's logical-axis rules (`state_shardings`: cache
rows and every per-slot array over the batch axes data x fsdp, KV heads over tensor) and the same programs
are jitted with those out_shardings, so the state keeps its layout across calls and the parameters are
used where they lie (sharded like training's; never gathered onto one device).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vagent_jax.kernels.sampling import sample
from vagent_jax.kernels.sampling_reference import position_seeds
from vagent_jax.models.config import ModelConfig
from vagent_jax.models.transformer import (cache_logical_axes, forward, init_cache, merge_cache, split_cache,
                                           unstack_layers)
from vagent_jax.sharding import logical_to_spec, tree_shardings

REASONS = {0: "running", 1: "stop_token", 2: "stop_sequence", 3: "max_new_tokens", 4: "max_length",
           5: "deepconf", 6: "nonfinite"}
State = dict[str, Any]


class StepConsts(NamedTuple):
    """Per-run constants of the decode loop (device arrays, traced)."""

    temperature: jax.Array  # [B] f32
    top_k: jax.Array  # [B] i32
    top_p: jax.Array  # [B] f32
    min_p: jax.Array  # [B] f32
    stop_ids: jax.Array  # [n_stop] i32 (pad -1)
    stop_seqs: jax.Array  # [n_seq, m] i32, right-aligned, left-padded with -1
    max_new_tokens: jax.Array  # [] i32 per turn
    window: jax.Array  # [] i32 DeepConf sliding-window length


def init_state(cfg: ModelConfig, batch: int, max_len: int, cache_dtype: Any = None) -> State:
    """Empty slots: all inactive, zero cache."""
    zf = lambda: jnp.zeros((batch, max_len), jnp.float32)  # noqa: E731  (distinct buffers: the state is donated)
    zi = lambda: jnp.zeros((batch,), jnp.int32)  # noqa: E731
    return {
        "cache": init_cache(cfg, batch, max_len, cache_dtype),
        "last": zi(), "pos": zi(), "active": jnp.zeros((batch,), bool), "reason": zi(),
        "tokens": jnp.zeros((batch, max_len), jnp.int32), "gen_mask": jnp.zeros((batch, max_len), bool),
        "logprob": zf(), "sample_logprob": zf(), "entropy": zf(), "confidence": zf(), "gen_conf": zf(),
        "turn_len": zi(), "n_gen": zi(), "win_sum": jnp.zeros((batch,), jnp.float32),
        "threshold": jnp.full((batch,), -jnp.inf, jnp.float32),
        "seed": jnp.zeros((batch,), jnp.uint32),
    }


def _record(st: State, rows: jax.Array, pos: jax.Array, out: Any, ok: jax.Array, window: jax.Array) -> State:
    """Write sampled tokens and their stats at (rows, pos) where ok; update DeepConf window sums."""
    S = st["tokens"].shape[1]
    p = jnp.where(ok, pos, S)  # out-of-range index: the write is dropped
    st = dict(st)
    for name, val in (("tokens", out.token), ("logprob", out.logprob), ("sample_logprob", out.sample_logprob),
                      ("entropy", out.entropy), ("confidence", out.confidence)):
        st[name] = st[name].at[rows, p].set(val.astype(st[name].dtype), mode="drop")
    st["gen_mask"] = st["gen_mask"].at[rows, p].set(True, mode="drop")
    g = st["n_gen"][rows]
    st["gen_conf"] = st["gen_conf"].at[rows, jnp.where(ok, g, S)].set(out.confidence, mode="drop")
    old = jnp.where(g >= window, st["gen_conf"][rows, jnp.maximum(g - window, 0)], 0.0)
    st["win_sum"] = st["win_sum"].at[rows].add(jnp.where(ok, out.confidence - old, 0.0))
    st["n_gen"] = st["n_gen"].at[rows].add(ok.astype(jnp.int32))
    st["turn_len"] = st["turn_len"].at[rows].add(ok.astype(jnp.int32))
    return st


def _stop_reason(st: State, rows: jax.Array, out: Any, c: StepConsts) -> jax.Array:
    """Reason code (0 = keep going) for each of `rows` after its newest token at st['pos'][rows].

    Stop sequences match only tokens of the current turn (generated ones), never prompt or observation.
    """
    S = st["tokens"].shape[1]
    pos = st["pos"][rows]
    tok = out.token
    r = jnp.zeros_like(tok)
    hit_seq = jnp.zeros(tok.shape, bool)
    m = c.stop_seqs.shape[1]
    if c.stop_seqs.shape[0] > 0:
        idx = pos[:, None] - (m - 1) + jnp.arange(m)[None]  # [n, m]
        recent = jnp.where(idx >= 0, st["tokens"][rows[:, None], jnp.clip(idx, 0, S - 1)], -2)
        gm = idx > (pos - st["turn_len"][rows])[:, None]  # inside this turn: generated by the policy
        pad = c.stop_seqs[None] < 0  # [1, n_seq, m]
        match = (recent[:, None] == c.stop_seqs[None]) & gm[:, None] | pad
        hit_seq = jnp.any(jnp.all(match, axis=-1), axis=-1)
    n = st["n_gen"][rows]
    low_conf = (n >= c.window) & (st["win_sum"][rows] / c.window < st["threshold"][rows])
    r = jnp.where(pos >= S - 1, 4, r)
    r = jnp.where(st["turn_len"][rows] >= c.max_new_tokens, 3, r)
    r = jnp.where(low_conf, 5, r)
    r = jnp.where(hit_seq, 2, r)
    r = jnp.where(jnp.any(tok[:, None] == c.stop_ids[None], axis=-1), 1, r)
    return jnp.where(out.nonfinite, 6, r)


def prefill(params: Any, st: State, slots: jax.Array, tokens: jax.Array, lengths: jax.Array,
            starts: jax.Array, fresh: jax.Array, thresholds: jax.Array, request_seeds: jax.Array, key: jax.Array,
            c: StepConsts, *, cfg: ModelConfig, conf_k: int, impl: str) -> State:
    """Write tokens [n, P] (first `lengths` valid) at positions starts.. of `slots` and sample the next token.
    request_seeds [n] uint32: the seed of each fresh row's request (ignored for continuations).

    fresh [n]: a new trajectory (counters reset, the slot's stale cache zeroed so NaN/inf left by an earlier
    occupant cannot reach attention through 0 * NaN) vs. a continuation after an observation. Padding rows
    use slot index B (writes dropped). Slots whose prompt leaves no room stop with reason max_length.
    """
    B, S = st["tokens"].shape
    n, P = tokens.shape
    valid = slots < B
    rows = jnp.minimum(slots, B - 1)
    st = dict(st)
    for name in ("n_gen", "win_sum"):
        st[name] = st[name].at[slots].set(jnp.where(fresh, 0, st[name][rows]).astype(st[name].dtype), mode="drop")
    st["turn_len"] = st["turn_len"].at[slots].set(0, mode="drop")
    st["threshold"] = st["threshold"].at[slots].set(thresholds, mode="drop")
    st["seed"] = st["seed"].at[slots].set(jnp.where(fresh, request_seeds.astype(jnp.uint32), st["seed"][rows]),
                                          mode="drop")
    st["gen_mask"] = st["gen_mask"].at[slots].set(jnp.where(fresh[:, None], False, st["gen_mask"][rows]), mode="drop")
    positions = starts[:, None] + jnp.arange(P, dtype=jnp.int32)[None]
    in_len = jnp.arange(P)[None] < lengths[:, None]
    sub = {k: jnp.where(fresh[None, :, None, None, None], jnp.zeros((), v.dtype), v[:, rows])
           for k, v in st["cache"].items()}
    logits, sub = forward(params, tokens, jnp.where(in_len, positions, S), cache=sub, cfg=cfg)
    st["cache"] = {k: st["cache"][k].at[:, slots].set(sub[k], mode="drop") for k in sub}
    wpos = jnp.where(in_len & valid[:, None], positions, S)
    st["tokens"] = st["tokens"].at[rows[:, None], wpos].set(tokens, mode="drop")
    zpos = jnp.where(fresh[:, None] | (jnp.arange(P)[None] > 0), wpos, S)  # a resume's token 0 was generated
    for name in ("logprob", "sample_logprob", "entropy", "confidence"):  # no stale stats under prompt/obs
        st[name] = st[name].at[rows[:, None], zpos].set(0.0, mode="drop")
    last_logits = logits[jnp.arange(n), jnp.maximum(lengths - 1, 0)]
    end = starts + lengths  # position of the sampled token
    seeds = position_seeds(jax.random.bits(key, (), jnp.uint32), st["seed"][rows], end)
    out = sample(last_logits, key, c.temperature[rows], c.top_k[rows], c.top_p[rows], c.min_p[rows],
                 conf_k=conf_k, impl=impl, row_seed=seeds)
    fits = end <= S - 1
    ok = valid & fits
    st = _record(st, rows, end, out, ok, c.window)
    st["pos"] = st["pos"].at[slots].set(jnp.where(fits, end, S - 1), mode="drop")
    st["last"] = st["last"].at[slots].set(out.token, mode="drop")
    reason = _stop_reason(st, rows, out, c)
    reason = jnp.where(fits, reason, 4)
    st["reason"] = st["reason"].at[slots].set(reason, mode="drop")
    st["active"] = st["active"].at[slots].set(reason == 0, mode="drop")
    return st


def decode_chunk(params: Any, st: State, key: jax.Array, c: StepConsts, *, cfg: ModelConfig, steps: int,
                 conf_k: int, impl: str, kv_len: int | None = None) -> State:
    """Run `steps` single-token decode steps over all slots; inactive rows are computed but not written.

    kv_len (static): attention reads cache slots [0, kv_len) only; the caller picks a bucket above every
    active slot's position + steps (inactive rows may read a truncated prefix: their outputs are dropped).
    """
    B = st["last"].shape[0]
    rows = jnp.arange(B)
    # Weights and the first kv_len cache slots are split per layer once per chunk, not sliced every step.
    params = unstack_layers(params)
    full_cache = st["cache"]
    st = dict(st, cache=split_cache(full_cache, kv_len or full_cache["k"].shape[-1]))
    stream = jax.random.bits(key, (), jnp.uint32)

    def body(st, i):
        logits, cache = forward(params, st["last"][:, None], st["pos"][:, None], cache=st["cache"], cfg=cfg,
                                kv_len=kv_len)
        new_pos = st["pos"] + 1
        out = sample(logits[:, 0], key, c.temperature, c.top_k, c.top_p, c.min_p, conf_k=conf_k, impl=impl,
                     row_seed=position_seeds(stream, st["seed"], new_pos))
        act = st["active"]
        st = dict(st, cache=cache)
        st = _record(st, rows, new_pos, out, act, c.window)
        st["pos"] = jnp.where(act, new_pos, st["pos"])
        st["last"] = jnp.where(act, out.token, st["last"])
        reason = _stop_reason(st, rows, out, c)
        stop = act & (reason > 0)
        st["reason"] = jnp.where(stop, reason, st["reason"])
        st["active"] = act & ~stop
        return st, None

    st, _ = jax.lax.scan(body, st, jnp.arange(steps))
    return dict(st, cache=merge_cache(full_cache, st["cache"]))


ROW_FIELDS = ("tokens", "gen_mask", "logprob", "sample_logprob", "entropy", "confidence", "reason")


def slot_row(st: State, slot: jax.Array) -> dict[str, jax.Array]:
    """One slot's trajectory arrays ([S] each) and its reason: one program for any slot (slot is traced)."""
    return {k: st[k][slot] for k in ROW_FIELDS}


prefill_jit = jax.jit(prefill, static_argnames=("cfg", "conf_k", "impl"), donate_argnames=("st",))
decode_chunk_jit = jax.jit(decode_chunk, static_argnames=("cfg", "steps", "conf_k", "impl", "kv_len"),
                           donate_argnames=("st",))
slot_row_jit = jax.jit(slot_row)


def state_shardings(cfg: ModelConfig, batch: int, max_len: int, cache_dtype: Any, mesh: Mesh) -> State:
    """NamedShardings of the slot state on `mesh`: the cache by cache_logical_axes (rows over data x fsdp,
    KV heads over tensor), every other field by its leading (slot) axis over data x fsdp."""
    shapes = jax.eval_shape(lambda: init_state(cfg, batch, max_len, cache_dtype))
    out = {k: NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (v.ndim - 1), v.shape, mesh))
           for k, v in shapes.items() if k != "cache"}
    out["cache"] = tree_shardings(cache_logical_axes(), shapes["cache"], mesh)
    return out


class EnginePrograms(NamedTuple):
    """The engine's jitted programs for one (mesh, model, slots, cache length, cache dtype)."""

    init: Callable[[], State]  # empty state, created sharded
    prefill: Any
    decode_chunk: Any
    slot_row: Any
    state_shardings: State
    replicated: NamedSharding


@functools.lru_cache(maxsize=32)
def mesh_programs(mesh: Mesh, cfg: ModelConfig, batch: int, max_len: int, cache_dtype: Any) -> EnginePrograms:
    """prefill / decode_chunk / slot_row jitted for the state sharded on `mesh` (out_shardings fixed to the
    state's, state donated); one set per mesh and shape, shared by every engine built on them."""
    st = state_shardings(cfg, batch, max_len, cache_dtype, mesh)
    rep = NamedSharding(mesh, PartitionSpec())
    init = jax.jit(functools.partial(init_state, cfg, batch, max_len, cache_dtype), out_shardings=st)
    pre = jax.jit(prefill, static_argnames=("cfg", "conf_k", "impl"), donate_argnames=("st",), out_shardings=st)
    dec = jax.jit(decode_chunk, static_argnames=("cfg", "steps", "conf_k", "impl", "kv_len"),
                  donate_argnames=("st",), out_shardings=st)
    row = jax.jit(slot_row, out_shardings=rep)
    return EnginePrograms(init, pre, dec, row, st, rep)
