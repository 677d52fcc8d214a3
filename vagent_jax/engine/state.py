"""The decode engine's device state: B slots of S cache positions, as one typed pytree.

`DecodeState` holds every per-slot array the engine's programs read and write (field comments give shapes:
B = batch_slots, S = max_len); `StopReason` names why a slot stopped (the values the programs store in
`reason`); `StepConsts` are the per-run constants of the decode loop. The KV cache is the model's own
layout (models.transformer.init_cache): k [L, B, Hkv, hd, S] and v [L, B, Hkv, S, hd], so attention reads
keys as [hd, S] and values as [S, hd] without a transpose.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import Mesh, NamedSharding

from vagent_jax.models.config import ModelConfig
from vagent_jax.models.transformer import cache_logical_axes, init_cache
from vagent_jax.sharding import logical_to_spec, tree_shardings


class StopReason(enum.IntEnum):
    """Why a slot's turn ended (0: it has not). Stored as int32 in DecodeState.reason; when one token hits
    several, the programs keep the highest-priority one (nonfinite, stop token, stop sequence, deepconf,
    per-turn budget, cache end)."""

    RUNNING = 0
    STOP_TOKEN = 1
    STOP_SEQUENCE = 2
    MAX_NEW_TOKENS = 3
    MAX_LENGTH = 4
    DEEPCONF = 5
    NONFINITE = 6

    @property
    def label(self) -> str:
        """The name trajectories and metrics carry ("stop_token", "max_length", ...)."""
        return self.name.lower()


@struct.dataclass
class DecodeState:
    """Everything the engine keeps on device between calls (donated to and returned by every program).

    Positions: `tokens` and the per-token stats are indexed by cache position; `gen_conf` by generation index
    (the n-th token the policy generated in the trajectory), for DeepConf's sliding window.
    """

    cache: dict[str, jax.Array]  # {"k": [L, B, Hkv, hd, S], "v": [L, B, Hkv, S, hd]}
    last: jax.Array  # [B] int32: the sampled token not yet in the cache, at position `pos`
    pos: jax.Array  # [B] int32
    active: jax.Array  # [B] bool: decoding (False: stopped, awaiting the host, or free)
    reason: jax.Array  # [B] int32 StopReason of the slot's last stop
    tokens: jax.Array  # [B, S] int32
    gen_mask: jax.Array  # [B, S] bool: 1 where the policy generated the token
    logprob: jax.Array  # [B, S] f32 under the temperature-1 policy
    sample_logprob: jax.Array  # [B, S] f32 under the sampling distribution
    entropy: jax.Array  # [B, S] f32 of the sampling distribution before truncation
    confidence: jax.Array  # [B, S] f32 DeepConf token confidence
    gen_conf: jax.Array  # [B, S] f32 confidence by generation index
    turn_len: jax.Array  # [B] int32 tokens generated this turn
    n_gen: jax.Array  # [B] int32 tokens generated in the whole trajectory
    win_sum: jax.Array  # [B] f32 sum of the last `window` gen_conf values
    threshold: jax.Array  # [B] f32 DeepConf stop threshold (-inf: off)
    seed: jax.Array  # [B] uint32 the request seed of the slot's trajectory


# What one finished slot hands back to the host (each [S], reason []).
ROW_FIELDS = ("tokens", "gen_mask", "logprob", "sample_logprob", "entropy", "confidence", "reason")


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


def init_state(cfg: ModelConfig, batch: int, max_len: int, cache_dtype: Any = None) -> DecodeState:
    """Empty slots: all inactive, zero cache (distinct buffers everywhere: the state is donated)."""
    zf = lambda: jnp.zeros((batch, max_len), jnp.float32)  # noqa: E731
    zi = lambda: jnp.zeros((batch,), jnp.int32)  # noqa: E731
    return DecodeState(
        cache=init_cache(cfg, batch, max_len, cache_dtype),
        last=zi(), pos=zi(), active=jnp.zeros((batch,), bool), reason=zi(),
        tokens=jnp.zeros((batch, max_len), jnp.int32), gen_mask=jnp.zeros((batch, max_len), bool),
        logprob=zf(), sample_logprob=zf(), entropy=zf(), confidence=zf(), gen_conf=zf(),
        turn_len=zi(), n_gen=zi(), win_sum=jnp.zeros((batch,), jnp.float32),
        threshold=jnp.full((batch,), -jnp.inf, jnp.float32), seed=jnp.zeros((batch,), jnp.uint32))


def state_shardings(cfg: ModelConfig, batch: int, max_len: int, cache_dtype: Any, mesh: Mesh) -> DecodeState:
    """NamedShardings of the slot state on `mesh`: the cache by cache_logical_axes (rows over data x fsdp,
    KV heads over tensor), every other field by its leading (slot) axis over data x fsdp."""
    shapes = jax.eval_shape(lambda: init_state(cfg, batch, max_len, cache_dtype))
    by_slot = {f.name: NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (v.ndim - 1), v.shape, mesh))
               for f in dataclasses.fields(shapes) if f.name != "cache" for v in (getattr(shapes, f.name),)}
    return DecodeState(cache=tree_shardings(cache_logical_axes(), shapes.cache, mesh), **by_slot)
