"""The decode engine on a mesh (8 fake CPU devices, fsdp 4 x tensor 2): greedy tokens equal the 1-device
engine, parameters plus KV cache are spread over the devices (no device holds more than 1.25x its share
plus the norms every device keeps by design), and one engine takes new params and seeds step after step
with the same tokens as a freshly built engine and without compiling anything new."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from vagent_jax.engine import DecodeEngine, EngineConfig, SamplingConfig
from vagent_jax.engine.programs import mesh_programs
from vagent_jax.models.config import ModelConfig
from vagent_jax.models.transformer import init_params
from vagent_jax.sharding import MeshConfig, make_mesh
from vagent_jax.train.train_state import param_shardings

# 2 KV heads (split over tensor = 2), d_model 64 and vocab 128 (split over fsdp = 4 / tensor = 2), 8 slots
# (2 per fsdp shard). init_std 0.5: peaked logits, so greedy argmax has no near-ties across layouts.
CFG = ModelConfig(vocab_size=128, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, d_ff=128,
                  qk_norm=True, tie_embeddings=False, max_seq_len=64, init_std=0.5)
ENGINE = EngineConfig(batch_slots=8, max_len=64, max_new_tokens=8, chunk_steps=4, min_prefill_bucket=32,
                      min_prefill_rows=8, min_kv_bucket=32, sampling=SamplingConfig(temperature=0.0))
SAMPLED = EngineConfig(**{**ENGINE.__dict__, "sampling": SamplingConfig(temperature=1.0)})


@pytest.fixture(scope="module")
def mesh():
    return make_mesh(MeshConfig(fsdp=4, tensor=2))


def _params(seed: int):
    return init_params(CFG, jax.random.key(seed))


def _prompts(n: int, seed: int = 1) -> list[list[int]]:
    """n prompts of 3..19 tokens (the same lengths for every seed, so every step reaches the same buckets)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, CFG.vocab_size, int(k)).tolist() for k in np.random.default_rng(0).integers(3, 20, n)]


def _tokens(trajs) -> list[list[int]]:
    return [t.tokens.tolist() for t in trajs]


def _max_device_bytes(trees) -> int:
    """The most bytes any one device holds of these trees (its addressable shards)."""
    per: dict = {}
    for x in jax.tree.leaves(trees):
        for s in x.addressable_shards:
            per[s.device] = per.get(s.device, 0) + s.data.nbytes
    return max(per.values())


def test_sharded_greedy_equals_one_device_and_spreads_params_and_cache(mesh):
    params = _params(0)
    prompts = _prompts(12)  # more prompts than slots: slots are reused
    want = _tokens(DecodeEngine(params, CFG, ENGINE, ()).generate(prompts))
    sharded = jax.device_put(params, param_shardings(CFG, mesh))
    eng = DecodeEngine(sharded, CFG, ENGINE, (), mesh=mesh)
    assert _tokens(eng.generate(prompts)) == want
    cache = eng.state.cache
    assert cache["k"].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None, None)
    total = sum(x.nbytes for x in jax.tree.leaves((sharded, cache)))
    norms = sum(x.nbytes for path, x in jax.tree_util.tree_leaves_with_path(sharded)
                if "norm" in jax.tree_util.keystr(path))  # [D] / [hd] scales: replicated by design
    held = _max_device_bytes((sharded, cache))
    assert held <= 1.25 * total / 8 + norms, (held, total / 8, norms)
    assert eng.params is sharded  # decoded with the caller's arrays, not a copy


def test_one_engine_takes_new_params_each_step_without_recompiling(mesh):
    shard = param_shardings(CFG, mesh)
    progs = mesh_programs(mesh, CFG, ENGINE.batch_slots, ENGINE.max_len, None)
    eng = DecodeEngine(jax.device_put(_params(0), shard), CFG, SAMPLED, (), mesh=mesh)
    counts = []
    for step in range(3):
        params = jax.device_put(_params(10 + step), shard)  # what an update step hands over
        eng.set_params(params)
        eng.reset(seed=100 + step)
        prompts = _prompts(10, seed=step)
        got = _tokens(eng.generate(prompts))
        fresh = DecodeEngine(params, CFG, SAMPLED, (), seed=100 + step, mesh=mesh)
        assert got == _tokens(fresh.generate(prompts)), step  # same tokens as an engine built for this step
        counts.append((progs.prefill._cache_size(), progs.decode_chunk._cache_size(),
                       progs.slot_row._cache_size()))
        assert all(x.sharding == s for x, s in zip(jax.tree.leaves(eng.state),
                                                   jax.tree.leaves(progs.state_shardings)))
    assert counts[2] == counts[1] == counts[0], counts  # steps 2 and 3 compiled nothing
    assert eng.compiled_programs <= 1 + 2  # prefill (8 rows x 32 tokens) + kv buckets 32, 64
    with pytest.raises(ValueError, match="params tree"):
        eng.set_params({"embed": jnp.zeros((2, 2))})
    eng.submit("x", [1, 2, 3])
    with pytest.raises(RuntimeError, match="still in the engine"):
        eng.reset(seed=0)
