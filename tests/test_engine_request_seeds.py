"""Per-request sampling seeds: a request's tokens depend on (engine seed, request seed, position) only, so
multi-host RL (each host decoding its share of the step) samples what one process would. Kernel: explicit
row seeds replace the key's per-row seeds and follow the row wherever it sits in the batch."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vagent_jax.engine import DecodeEngine, EngineConfig, SamplingConfig
from vagent_jax.kernels.sampling import sample
from vagent_jax.kernels.sampling_reference import position_seeds, row_seeds
from vagent_jax.models.config import ModelConfig
from vagent_jax.models.transformer import init_params

CFG = ModelConfig(vocab_size=61, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64,
                  max_seq_len=64, init_std=0.5)
ENGINE = EngineConfig(batch_slots=4, max_len=32, max_new_tokens=10, chunk_steps=4, min_prefill_bucket=16,
                      sampling=SamplingConfig(temperature=1.0))
PROMPTS = {7: [3, 9, 4, 1, 5], 8: [2, 2, 8], 9: [11, 12, 13, 14, 15, 16, 17], 10: [6]}


@pytest.fixture(scope="module")
def params():
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(lambda: init_params(CFG, jax.random.key(0)))
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.5, s.shape), s.dtype), shapes)


def _decode(params, order: list[int], seed: int = 5) -> dict[int, list[int]]:
    """Submit the prompts in `order` (request id = request seed) and return each request's generated tokens."""
    engine = DecodeEngine(params, CFG, ENGINE, stop_token_ids=(), seed=seed)
    for rid in order:
        engine.submit(rid, PROMPTS[rid], seed=rid)
    out: dict[int, list[int]] = {}
    while len(out) < len(order):
        for turn in engine.step():
            traj = engine.finish(turn.request_id)
            out[turn.request_id] = traj.tokens[traj.gen_mask].tolist()
    return out


def test_request_tokens_do_not_depend_on_slot_or_batch(params) -> None:
    alone = _decode(params, [7])[7]
    assert len(alone) == ENGINE.max_new_tokens
    in_batch = _decode(params, [9, 8, 7, 10])  # request 7 in slot 2, prefilled beside other lengths
    reordered = _decode(params, [10, 7])  # slot 1, another batch size
    assert in_batch[7] == alone and reordered[7] == alone
    assert in_batch[10] == reordered[10]
    assert _decode(params, [7], seed=6)[7] != alone  # the engine seed still matters
    engine = DecodeEngine(params, CFG, ENGINE, stop_token_ids=(), seed=5)
    engine.submit(1, PROMPTS[7], seed=8)  # another request seed, same prompt: other tokens
    turn = engine.step() or engine.step() or engine.step()
    assert engine.finish(turn[0].request_id).tokens[5:].tolist() != alone


def test_kernel_row_seeds_follow_the_row() -> None:
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(0, 1, (4, 50)), jnp.float32)
    t, k, p, m = SamplingConfig(temperature=1.0).row_arrays(4)
    seeds = position_seeds(jnp.uint32(3), jnp.asarray([10, 11, 12, 13], jnp.uint32), jnp.asarray([4, 4, 9, 2]))
    out = sample(logits, jax.random.key(0), t, k, p, m, row_seed=seeds)
    perm = np.asarray([2, 0, 3, 1])
    moved = sample(logits[perm], jax.random.key(1), t, k, p, m, row_seed=seeds[perm])  # the key is unused
    np.testing.assert_array_equal(np.asarray(moved.token), np.asarray(out.token)[perm])
    # without row seeds the key's per-row seeds are used, as before
    default = sample(logits, jax.random.key(0), t, k, p, m)
    explicit = sample(logits, jax.random.key(9), t, k, p, m, row_seed=row_seeds(jax.random.key(0), 4))
    np.testing.assert_array_equal(np.asarray(default.token), np.asarray(explicit.token))
    pallas = sample(logits, jax.random.key(0), t, k, p, m, row_seed=seeds, impl="pallas", interpret=True)
    np.testing.assert_array_equal(np.asarray(pallas.token), np.asarray(out.token))
    with pytest.raises(ValueError, match="row_seed must have shape"):
        sample(logits, jax.random.key(0), t, k, p, m, row_seed=seeds[:3])


def test_position_seeds_differ_by_each_input() -> None:
    base = np.asarray(position_seeds(jnp.uint32(1), jnp.asarray([5], jnp.uint32), jnp.asarray([7])))
    for args in ((2, 5, 7), (1, 6, 7), (1, 5, 8)):
        other = position_seeds(jnp.uint32(args[0]), jnp.asarray([args[1]], jnp.uint32), jnp.asarray([args[2]]))
        assert np.asarray(other)[0] != base[0], args
