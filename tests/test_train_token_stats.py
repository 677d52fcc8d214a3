"""Chunked log-probs/entropy vs the naive full-logits computation (values and gradients), the memory
bound that is the reason for chunking, and the target-token alignment used by the SFT and RL steps."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vagent_jax.models.config import ModelConfig
from vagent_jax.models.transformer import forward
from vagent_jax.testing import random_params
from vagent_jax.train.token_stats import next_token_valid, sequence_token_stats, token_logprobs_and_entropy


def naive_stats(h, w, targets):
    """Full [B, T, V] fp32 logits, then log_softmax; H = -sum p log p."""
    logits = jnp.einsum("btd,dv->btv", h, w, preferred_element_type=jnp.float32)
    logp_all = jax.nn.log_softmax(logits, axis=-1)
    logp = jnp.take_along_axis(logp_all, targets[..., None], axis=-1)[..., 0]
    return logp, -(jnp.exp(logp_all) * logp_all).sum(-1)


def _inputs(B=2, T=10, D=32, V=96, seed=0):
    rng = np.random.default_rng(seed)
    h = jnp.asarray(rng.normal(0, 1, (B, T, D)), jnp.float32)
    w = jnp.asarray(rng.normal(0, 0.3, (D, V)), jnp.float32)
    t = jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32)
    return h, w, t


@pytest.mark.parametrize("seq_chunk", [4, 5, 64])  # 10 = 2*4 + pad, exact 2*5, one chunk larger than T
def test_values_and_grads_equal_naive(seq_chunk):
    h, w, t = _inputs()
    a = jnp.asarray(np.random.default_rng(1).normal(size=t.shape), jnp.float32)  # arbitrary cotangents
    b = jnp.asarray(np.random.default_rng(2).normal(size=t.shape), jnp.float32)

    def objective(fn):
        def f(h, w):
            lp, ent = fn(h, w, t)
            return (a * lp).sum() + (b * ent).sum()
        return f

    chunked = lambda h, w, t: token_logprobs_and_entropy(h, w, t, seq_chunk=seq_chunk)  # noqa: E731
    lp, ent = jax.jit(chunked)(h, w, t)
    lp0, ent0 = naive_stats(h, w, t)
    np.testing.assert_allclose(lp, lp0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ent, ent0, rtol=1e-5, atol=1e-5)
    assert float(ent.min()) > 0 and float(ent.max()) <= np.log(w.shape[1]) + 1e-5
    g = jax.jit(jax.grad(objective(chunked), (0, 1)))(h, w)
    g0 = jax.grad(objective(naive_stats), (0, 1))(h, w)
    for x, y in zip(g, g0):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_bf16_compute_close_to_fp32():
    h, w, t = _inputs(seed=3)
    lp, ent = token_logprobs_and_entropy(h, w, t, seq_chunk=4, compute_dtype=jnp.bfloat16)
    assert lp.dtype == jnp.float32 and ent.dtype == jnp.float32
    lp0, ent0 = naive_stats(h, w, t)
    np.testing.assert_allclose(lp, lp0, atol=0.1)
    np.testing.assert_allclose(ent, ent0, atol=0.1)


def test_backward_never_holds_full_logits():
    B, T, D, V = 2, 256, 32, 4096
    h, w = jnp.ones((B, T, D)), jnp.ones((D, V))
    t = jnp.zeros((B, T), jnp.int32)

    def loss(h, w):
        lp, ent = token_logprobs_and_entropy(h, w, t, seq_chunk=32)
        return lp.sum() + ent.sum()

    temp = jax.jit(jax.grad(loss, (0, 1))).lower(h, w).compile().memory_analysis().temp_size_in_bytes
    full_logits = B * T * V * 4
    assert temp < full_logits, (temp, full_logits)


def test_bad_shapes_name_the_tensor():
    h, w, t = _inputs()
    with pytest.raises(ValueError, match="targets"):
        token_logprobs_and_entropy(h, w, t[:, :3])
    with pytest.raises(ValueError, match="lm head"):
        token_logprobs_and_entropy(h, w[:5], t)


def test_sequence_stats_align_to_target_token_and_segments():
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64)
    params = random_params(cfg, 0, std=0.1)
    rng = np.random.default_rng(0)
    B, T = 2, 12
    tokens = jnp.asarray(rng.integers(0, 64, (B, T)), jnp.int32)
    seg = jnp.asarray([[1] * 5 + [2] * 5 + [0] * 2, [1] * 12], jnp.int32)
    pos = jnp.asarray([list(range(5)) + list(range(5)) + [0, 0], list(range(12))], jnp.int32)
    lp, ent, valid = sequence_token_stats(params, tokens, pos, seg, cfg=cfg, seq_chunk=5)
    want_valid = np.ones((B, T), bool)
    want_valid[:, 0] = False
    want_valid[0, 5] = False  # first token of segment 2
    want_valid[0, 10:] = False  # padding
    np.testing.assert_array_equal(valid, want_valid)
    np.testing.assert_array_equal(next_token_valid(tokens, None)[:, 0], [False, False])
    logits, _ = forward(params, tokens, pos, seg, cfg=cfg)
    ref = np.asarray(jax.nn.log_softmax(logits, -1))
    lp, ent, tokens = np.asarray(lp), np.asarray(ent), np.asarray(tokens)
    for b in range(B):
        for t in range(T):
            if want_valid[b, t]:
                assert abs(lp[b, t] - ref[b, t - 1, tokens[b, t]]) < 1e-5
                assert abs(ent[b, t] + (np.exp(ref[b, t - 1]) * ref[b, t - 1]).sum()) < 1e-4
            else:
                assert lp[b, t] == 0.0 and ent[b, t] == 0.0


def test_unrolled_layers_equal_the_scan_in_values_and_gradients() -> None:
    """unroll_layers runs the same function: logp, entropy and the gradient of a loss on them match the
    lax.scan over stacked layers (3 layers, so a wrong slice or layer order would show)."""
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=3, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=48)
    params = random_params(cfg, 3, std=0.1)
    rng = np.random.default_rng(1)
    tokens = jnp.asarray(rng.integers(0, 64, (2, 9)), jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(9, dtype=jnp.int32), (2, 9))
    seg = jnp.asarray([[1] * 9, [1] * 4 + [2] * 5], jnp.int32)

    def loss(p, unroll):
        lp, ent, valid = sequence_token_stats(p, tokens, positions, seg, cfg=cfg, unroll_layers=unroll)
        return jnp.sum(lp) + 0.5 * jnp.sum(ent), (lp, ent, valid)

    (l0, out0), g0 = jax.value_and_grad(loss, has_aux=True)(params, False)
    (l1, out1), g1 = jax.value_and_grad(loss, has_aux=True)(params, True)
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    for a, b in zip(out1, out0):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=1e-5, atol=1e-6)
    assert jax.tree.structure(g1) == jax.tree.structure(g0)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # fp32 summation order
    assert float(jnp.abs(g0["layers"]["mlp_norm"] if "mlp_norm" in g0["layers"] else
                         jax.tree.leaves(g0["layers"])[0]).sum()) > 0  # gradients reach the stacked layers


def test_unroll_layers_for_cpu_meshes() -> None:
    from vagent_jax.sharding import MeshConfig, make_mesh
    from vagent_jax.train.token_stats import unroll_layers_for

    assert unroll_layers_for(make_mesh(MeshConfig(), devices=jax.devices()[:1]))
