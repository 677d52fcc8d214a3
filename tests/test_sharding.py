"""Mesh and logical-axis sharding on 8 fake CPU devices."""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from vagent_jax.config import ConfigError
from vagent_jax.models.config import ModelConfig
from vagent_jax.models.transformer import forward, init_params, param_logical_axes
from vagent_jax.sharding import (MeshConfig, batch_sharding, check_params_sharded, logical_to_spec, make_mesh,
                                 replicated_fraction, tree_shardings)

CFG = ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, d_ff=128,
                  qkv_bias=True, qk_norm=True, tie_embeddings=False)


def test_mesh_shapes_and_errors():
    assert dict(make_mesh(MeshConfig(data=2, fsdp=2, tensor=2)).shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert dict(make_mesh(MeshConfig()).shape) == {"data": 1, "fsdp": 8, "tensor": 1}
    assert dict(make_mesh(MeshConfig(), devices=jax.devices()[:1]).shape) == {"data": 1, "fsdp": 1, "tensor": 1}
    with pytest.raises(ConfigError, match="mesh"):
        make_mesh(MeshConfig(data=3, fsdp=-1))
    with pytest.raises(ConfigError, match="needs 12 devices"):
        make_mesh(MeshConfig(data=3, fsdp=2, tensor=2))


def test_logical_rules_drop_axes_that_do_not_divide():
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    assert logical_to_spec(("embed", "heads", "head_dim"), (64, 4, 16), mesh) == PartitionSpec("fsdp", "tensor", None)
    assert logical_to_spec(("embed", "kv_heads"), (64, 1), mesh) == PartitionSpec("fsdp", None)
    assert logical_to_spec(("batch", "seq"), (8, 5), mesh) == PartitionSpec(("data", "fsdp"), None)


def test_no_large_weight_stays_replicated():
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    shapes = jax.eval_shape(lambda: init_params(CFG, jax.random.key(0)))
    shardings = tree_shardings(param_logical_axes(CFG), shapes, mesh)
    assert replicated_fraction(shardings, shapes, min_bytes=4096) == 0.0
    assert replicated_fraction(shardings, shapes) < 0.02  # only norms/biases stay whole


def test_forward_on_2x2x2_mesh_equals_one_device():
    params = init_params(CFG, jax.random.key(0))
    rng = np.random.RandomState(0)
    tokens = jnp.asarray(rng.randint(0, 256, (8, 16)), jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(16, dtype=jnp.int32), (8, 16))
    segs = jnp.asarray(np.repeat([[1] * 10 + [2] * 6], 8, 0), jnp.int32)
    ref, _ = jax.jit(forward, static_argnames="cfg")(params, tokens, positions, segs, cfg=CFG)

    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    shardings = tree_shardings(param_logical_axes(CFG), params, mesh)
    sharded = jax.device_put(params, shardings)
    bs = batch_sharding(mesh, 2)
    fn = jax.jit(functools.partial(forward, cfg=CFG), in_shardings=(shardings, bs, bs, bs),
                 out_shardings=(NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None, "tensor")), None))
    got, _ = fn(sharded, jax.device_put(tokens, bs), jax.device_put(positions, bs), jax.device_put(segs, bs))
    assert len(got.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-5, rtol=1e-5)


def _abstract(cfg: ModelConfig, mesh):
    shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    shardings = tree_shardings(param_logical_axes(cfg), shapes, mesh)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)


def test_start_up_check_names_the_largest_replicated_weights():
    mesh = make_mesh(MeshConfig(fsdp=4, tensor=2))
    fracs = check_params_sharded(_abstract(CFG, mesh), mesh, 0.05)
    assert set(fracs) == {"fsdp", "tensor"} and fracs["fsdp"] < 0.01 and fracs["tensor"] < 0.01  # norms only
    # vocab 255 does not split over tensor=2: embed and lm_head (~40% of the bytes) stay whole on both halves
    odd = dataclasses.replace(CFG, vocab_size=255)
    with pytest.raises(ConfigError, match=r"mesh.max_replicated_fraction.*axis 'tensor' \(size 2\).*"
                                          r"\['embed'\] \[255, 64\].*\['lm_head'\] \[64, 255\]"):
        check_params_sharded(_abstract(odd, mesh), mesh, 0.05)
    assert check_params_sharded(_abstract(odd, mesh), mesh, 1.0)["tensor"] > 0.3  # 1.0: the check is off
    # the data axis replicates parameters by design and is not checked; real arrays work like abstract ones
    dp = make_mesh(MeshConfig(data=8, fsdp=1))
    assert check_params_sharded(jax.device_put(init_params(CFG, jax.random.key(0)),
                                               tree_shardings(param_logical_axes(CFG), _abstract(CFG, dp), dp)),
                                dp, 0.0) == {}
    with pytest.raises(ConfigError, match="max_replicated_fraction"):
        MeshConfig(max_replicated_fraction=1.5).validate()
