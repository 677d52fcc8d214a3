"""TrainState (params, optimizer state, step) and its creation directly in its mesh sharding.

Parameters are sharded by the logical-axis rules of vagent_jax.sharding; each optimizer-state copy of
the parameter tree (Adam's mu and nu) takes the sharding of the parameter it belongs to, and the
remaining scalars (counts) are replicated. Creation runs init under jit with those out_shardings, so
no full copy of the model is ever built on one device.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vagent_jax.models.config import ModelConfig
from vagent_jax.models.transformer import init_params, param_logical_axes
from vagent_jax.sharding import tree_shardings
from vagent_jax.train.optimizer import OptimizerConfig, make_optimizer


@flax.struct.dataclass
class TrainState:
    """What one update step reads and writes. step counts step calls, skipped ones included."""

    params: Any
    opt_state: Any
    step: jax.Array  # int32 scalar


def param_shardings(cfg: ModelConfig, mesh: Mesh) -> Any:
    """NamedShardings of the parameter tree under the logical-axis rules."""
    shapes = jax.eval_shape(lambda k: init_params(cfg, k), jax.random.key(0))
    return tree_shardings(param_logical_axes(cfg), shapes, mesh)


def state_shardings(cfg: ModelConfig, mesh: Mesh, optimizer: OptimizerConfig) -> TrainState:
    """NamedShardings of every TrainState leaf: params by the rules, optimizer moments like their
    parameter, counts and step replicated."""
    p_shard = param_shardings(cfg, mesh)
    tx = make_optimizer(optimizer)
    p_shapes = jax.eval_shape(lambda k: init_params(cfg, k), jax.random.key(0))
    opt_shapes = jax.eval_shape(tx.init, p_shapes)
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_shard = optax.tree_map_params(tx, lambda _, s: s, opt_shapes, p_shard,
                                      transform_non_params=lambda _: replicated)
    return TrainState(params=p_shard, opt_state=opt_shard, step=replicated)


@functools.lru_cache(maxsize=16)
def _jitted_init(cfg: ModelConfig, optimizer: OptimizerConfig, mesh: Mesh, from_key: bool) -> Any:
    """One compiled creator per (model, optimizer, mesh): from a PRNG key, or around given params."""
    tx = make_optimizer(optimizer)
    expect = jax.eval_shape(lambda k: init_params(cfg, k), jax.random.key(0))

    def init(arg: Any) -> TrainState:
        if from_key:
            params = init_params(cfg, arg)
        else:
            params = jax.tree.map(lambda x, e: x.astype(e.dtype), arg, expect)
        return TrainState(params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32))

    return jax.jit(init, out_shardings=state_shardings(cfg, mesh, optimizer))


def create_train_state(cfg: ModelConfig, optimizer: OptimizerConfig, mesh: Mesh, key: jax.Array) -> TrainState:
    """Randomly initialised params and fresh optimizer state, created sharded (jit out_shardings)."""
    return _jitted_init(cfg, optimizer, mesh, True)(key)


def train_state_from_params(params: Any, cfg: ModelConfig, optimizer: OptimizerConfig, mesh: Mesh) -> TrainState:
    """A TrainState around existing params (e.g. loaded from safetensors): params resharded by the
    rules, fresh optimizer state created sharded. Shapes must match `cfg`."""
    shardings = state_shardings(cfg, mesh, optimizer)
    expect = jax.eval_shape(lambda k: init_params(cfg, k), jax.random.key(0))
    if jax.tree.structure(expect) != jax.tree.structure(params):
        raise ValueError("params tree does not match the model config's parameter tree "
                         f"(expected {jax.tree.structure(expect)}, got {jax.tree.structure(params)})")
    for (path, e), p in zip(jax.tree_util.tree_leaves_with_path(expect), jax.tree.leaves(params)):
        if tuple(e.shape) != tuple(p.shape):
            raise ValueError(f"param {jax.tree_util.keystr(path)}: shape {tuple(p.shape)}, "
                             f"model config expects {tuple(e.shape)}")
    params = jax.device_put(params, shardings.params)
    return _jitted_init(cfg, optimizer, mesh, False)(params)
