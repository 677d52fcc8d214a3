"""Abstract (shape, dtype, sharding) inputs of the SFT step, the RL step and the decode chunk: what
ahead-of-time compilation lowers against, so no weight is ever created. Also the per-device bytes of
buffers that stay resident while another program runs (the optimizer state during decode).
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vagent_jax.engine.state import DecodeState, StepConsts, init_state
from vagent_jax.engine.state import state_shardings as decode_state_shardings
from vagent_jax.models.config import ModelConfig
from vagent_jax.models.transformer import dtype_of, init_params
from vagent_jax.sharding import batch_sharding
from vagent_jax.train.optimizer import OptimizerConfig, make_optimizer
from vagent_jax.train.sft_step import SFT_BATCH_KEYS
from vagent_jax.train.train_state import TrainState, param_shardings, state_shardings


def _with_shardings(shapes: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the matching NamedSharding of each leaf."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, shardings)


def abstract_params(cfg: ModelConfig, mesh: Mesh) -> Any:
    """The parameter tree as sharded ShapeDtypeStructs (the rules of vagent_jax.sharding)."""
    shapes = jax.eval_shape(lambda k: init_params(cfg, k), jax.random.key(0))
    return _with_shardings(shapes, param_shardings(cfg, mesh))


def abstract_train_state(cfg: ModelConfig, optimizer: OptimizerConfig, mesh: Mesh) -> TrainState:
    """TrainState (params, AdamW moments, step) as sharded ShapeDtypeStructs, laid out as
    train_state.state_shardings lays out the real one."""
    tx = make_optimizer(optimizer)
    p_shapes = jax.eval_shape(lambda k: init_params(cfg, k), jax.random.key(0))
    shapes = TrainState(params=p_shapes, opt_state=jax.eval_shape(tx.init, p_shapes),
                        step=jax.ShapeDtypeStruct((), jnp.int32))
    return _with_shardings(shapes, state_shardings(cfg, mesh, optimizer))


def abstract_sft_batch(batch_size: int, seq_len: int, mesh: Mesh) -> dict[str, jax.ShapeDtypeStruct]:
    """SFT batch [B, T]: int32 tokens/positions/segment_ids and fp32 loss_mask, batch-sharded."""
    dtypes = {"tokens": jnp.int32, "positions": jnp.int32, "segment_ids": jnp.int32, "loss_mask": jnp.float32}
    return {k: jax.ShapeDtypeStruct((batch_size, seq_len), dtypes[k], sharding=batch_sharding(mesh, 2))
            for k in SFT_BATCH_KEYS}


def abstract_rl_batch(rows: int, seq_len: int, mesh: Mesh, *, old_logp: bool) -> dict[str, jax.ShapeDtypeStruct]:
    """One RL update's batch as the RL job (jobs/rl.py) builds it: tokens, positions, loss_mask, rollout_logp [rows, T],
    advantages [rows], and old_logp [rows, T] when updates_per_batch > 1 (a separate log-prob pass)."""
    two = batch_sharding(mesh, 2)
    out = {"tokens": jax.ShapeDtypeStruct((rows, seq_len), jnp.int32, sharding=two),
           "positions": jax.ShapeDtypeStruct((rows, seq_len), jnp.int32, sharding=two),
           "loss_mask": jax.ShapeDtypeStruct((rows, seq_len), jnp.float32, sharding=two),
           "rollout_logp": jax.ShapeDtypeStruct((rows, seq_len), jnp.float32, sharding=two),
           "advantages": jax.ShapeDtypeStruct((rows,), jnp.float32, sharding=batch_sharding(mesh, 1))}
    if old_logp:
        out["old_logp"] = jax.ShapeDtypeStruct((rows, seq_len), jnp.float32, sharding=two)
    return out


def abstract_key(mesh: Mesh) -> jax.ShapeDtypeStruct:
    """A replicated typed PRNG key."""
    k = jax.eval_shape(lambda: jax.random.key(0))
    return jax.ShapeDtypeStruct(k.shape, k.dtype, sharding=NamedSharding(mesh, PartitionSpec()))


def abstract_decode_state(cfg: ModelConfig, batch_slots: int, max_len: int, cache_dtype: str,
                          mesh: Mesh) -> DecodeState:
    """The decode engine's slot state as the engine lays it out (engine.state.state_shardings): KV cache
    sharded by the cache's logical axes, every per-slot array by its leading (slot) axis over data x fsdp."""
    dt = None if cache_dtype == "auto" else dtype_of(cache_dtype)
    shapes = jax.eval_shape(lambda: init_state(cfg, batch_slots, max_len, dt))
    return _with_shardings(shapes, decode_state_shardings(cfg, batch_slots, max_len, dt, mesh))


def abstract_prefill_inputs(rows: int, tokens: int, mesh: Mesh) -> tuple[jax.ShapeDtypeStruct, ...]:
    """A prefill's host inputs as the engine passes them (replicated): slots, lengths, starts [rows] int32,
    tokens [rows, tokens] int32, fresh [rows] bool, thresholds [rows] f32, request seeds [rows] uint32."""
    rep = NamedSharding(mesh, PartitionSpec())
    one = lambda dt: jax.ShapeDtypeStruct((rows,), dt, sharding=rep)  # noqa: E731
    return (one(jnp.int32), jax.ShapeDtypeStruct((rows, tokens), jnp.int32, sharding=rep), one(jnp.int32),
            one(jnp.int32), one(jnp.bool_), one(jnp.float32), one(jnp.uint32))


def abstract_step_consts(batch_slots: int, num_stop_ids: int, mesh: Mesh) -> StepConsts:
    """The decode loop constants (per-slot sampling settings, stop ids, budgets), replicated; no stop
    sequences (shape [0, 1]) as in an engine built without them."""
    rep = NamedSharding(mesh, PartitionSpec())

    def sds(shape: tuple[int, ...], dtype: Any) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(shape, dtype, sharding=rep)

    b = (batch_slots,)
    return StepConsts(sds(b, jnp.float32), sds(b, jnp.int32), sds(b, jnp.float32), sds(b, jnp.float32),
                      sds((max(num_stop_ids, 1),), jnp.int32), sds((0, 1), jnp.int32), sds((), jnp.int32),
                      sds((), jnp.int32))


def per_device_bytes(tree: Any) -> int:
    """Bytes one device holds of a tree of sharded ShapeDtypeStructs (the largest shard per leaf)."""
    total = 0
    for x in jax.tree.leaves(tree):
        shard = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
        total += math.prod(shard) * np.dtype(x.dtype).itemsize
    return total
