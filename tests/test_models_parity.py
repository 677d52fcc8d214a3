"""Parity of the JAX policy with transformers on tiny random checkpoints of each family (fp32)."""
from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp
import pytest
import torch

from hf_fixtures import FAMILIES, make_hf_checkpoint
from vagent_jax.models.hf_io import load_hf_checkpoint
from vagent_jax.models.transformer import forward, init_cache

VOCAB = 97


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_ckpt(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    model = make_hf_checkpoint(request.param, path, vocab=VOCAB)
    cfg, params = load_hf_checkpoint(path)
    return request.param, model, cfg, params


def _positions(b, t, start=0):
    return jnp.broadcast_to(jnp.arange(start, start + t, dtype=jnp.int32), (b, t))


def test_full_sequence_logits_match(family_ckpt):
    fam, model, cfg, params = family_ckpt
    tokens = np.random.RandomState(1).randint(0, VOCAB, (3, 40))
    with torch.no_grad():
        ref = model(torch.tensor(tokens)).logits.numpy()
    logits, _ = jax.jit(forward, static_argnames="cfg")(params, jnp.asarray(tokens), _positions(3, 40), cfg=cfg)
    scale = np.abs(ref).max()
    assert scale > 1.0  # random weights give logits of a real spread
    assert np.abs(np.asarray(logits) - ref).max() <= 1e-4 * scale, fam


def test_prefill_then_decode_matches_full_forward(family_ckpt):
    _, _, cfg, params = family_ckpt
    tokens = jnp.asarray(np.random.RandomState(2).randint(0, VOCAB, (2, 24)), jnp.int32)
    full, _ = forward(params, tokens, _positions(2, 24), cfg=cfg)
    cache = init_cache(cfg, 2, 32)
    step = jax.jit(forward, static_argnames="cfg")
    logits, cache = step(params, tokens[:, :8], _positions(2, 8), cache=cache, cfg=cfg)
    outs = [logits]
    for t in range(8, 24):
        lg, cache = step(params, tokens[:, t:t + 1], _positions(2, 1, t), cache=cache, cfg=cfg)
        outs.append(lg)
    got = jnp.concatenate(outs, axis=1)
    assert np.abs(np.asarray(got - full)).max() <= 1e-4 * np.abs(np.asarray(full)).max()


def test_rows_at_different_positions_decode_independently(family_ckpt):
    """Row 0 prefilled with 5 tokens, row 1 with 9: one batched decode step equals each row alone."""
    _, _, cfg, params = family_ckpt
    rng = np.random.RandomState(3)
    seqs = [rng.randint(0, VOCAB, 6), rng.randint(0, VOCAB, 10)]
    cache = init_cache(cfg, 2, 16)
    toks = np.zeros((2, 9), np.int32)
    toks[0, :5], toks[1, :9] = seqs[0][:5], seqs[1][:9]
    pos = np.tile(np.arange(9), (2, 1))
    _, cache = forward(params, jnp.asarray(toks), jnp.asarray(pos), cache=cache, cfg=cfg)
    nxt = jnp.asarray([[seqs[0][5]], [seqs[1][9]]], jnp.int32)
    lg, _ = forward(params, nxt, jnp.asarray([[5], [9]], jnp.int32), cache=cache, cfg=cfg)
    for r, s in enumerate(seqs):
        ref, _ = forward(params, jnp.asarray(s[None]), _positions(1, len(s)), cfg=cfg)
        np.testing.assert_allclose(np.asarray(lg[r, 0]), np.asarray(ref[0, -1]), atol=1e-4 * 10)


def test_greedy_tokens_match_generate(family_ckpt):
    _, model, cfg, params = family_ckpt
    prompt = np.random.RandomState(4).randint(0, VOCAB, (1, 6))
    with torch.no_grad():
        ref = model.generate(torch.tensor(prompt), max_new_tokens=32, min_new_tokens=32, do_sample=False,
                             eos_token_id=None, pad_token_id=0)[0, 6:].numpy()
    step = jax.jit(forward, static_argnames="cfg")
    cache = init_cache(cfg, 1, 40)
    logits, cache = step(params, jnp.asarray(prompt, jnp.int32), _positions(1, 6), cache=cache, cfg=cfg)
    got = []
    for t in range(6, 38):
        nxt = int(jnp.argmax(logits[0, -1]))
        got.append(nxt)
        logits, cache = step(params, jnp.asarray([[nxt]], jnp.int32), _positions(1, 1, t), cache=cache, cfg=cfg)
    assert got == ref.tolist()
