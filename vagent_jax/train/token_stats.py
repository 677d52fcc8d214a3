"""Per-token log-probs of the taken tokens and full-vocabulary policy entropy, without [B, T, V] logits.

The sequence is cut into chunks of `seq_chunk` positions; each chunk computes its [B, t, V] logits
(matmul in the compute dtype, fp32 accumulation and output, as `logits_from_hidden`), an fp32
log-softmax, and keeps only two numbers per position:
    logp_t = log softmax(z_t / T)[y_t],   H_t = -sum_v p_v log p_v = logsumexp(z_t / T) - sum_v p_v z_v / T.
T is the rollout temperature: the RL trainer scores tokens under the distribution the sampler drew them
from before truncation (docs/algorithms.md, "Sampling temperature"); SFT and evaluation use T = 1.
The chunk body is rematerialised (jax.checkpoint), so the backward pass recomputes one chunk's logits
at a time instead of keeping all of them: peak memory is O(B * seq_chunk * V) in both directions.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from vagent_jax.models.config import ModelConfig
from vagent_jax.models.transformer import dtype_of, hidden_states, lm_head_weight, unstack_layers


def _chunk_stats(h: jax.Array, w: jax.Array, targets: jax.Array, inv_t: float) -> tuple[jax.Array, jax.Array]:
    """(logp [B, t], entropy [B, t]) of one chunk at temperature 1 / inv_t; h [B, t, D], w [D, V] compute dtype."""
    logits = jnp.einsum("btd,dv->btv", h, w, preferred_element_type=jnp.float32)
    if inv_t != 1.0:
        logits = logits * jnp.float32(inv_t)
    logz = jax.nn.logsumexp(logits, axis=-1)
    logp_all = logits - logz[..., None]
    # select-and-sum instead of a gather: stays a local reduction when V is sharded over `tensor`
    hit = jnp.arange(logits.shape[-1], dtype=targets.dtype) == targets[..., None]
    logp = jnp.sum(jnp.where(hit, logp_all, 0.0), axis=-1)
    entropy = logz - jnp.sum(jnp.exp(logp_all) * logits, axis=-1)
    return logp, entropy


def token_logprobs_and_entropy(h: jax.Array, w: jax.Array, targets: jax.Array, *, seq_chunk: int = 256,
                               compute_dtype: Any = None, temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """log p(targets[b, t] | h[b, t]) and the entropy of that distribution, both fp32 [B, T].

    h: [B, T, D] hidden states; w: [D, V] output projection; targets: [B, T] int ids in [0, V);
    temperature: p = softmax(h w / temperature) (static, > 0).
    Differentiable in h and w; never holds more than one chunk's [B, seq_chunk, V] logits.
    """
    if h.ndim != 3 or w.ndim != 2 or h.shape[-1] != w.shape[0]:
        raise ValueError(f"hidden states [B, T, D] and lm head [D, V] do not match: {h.shape} vs {w.shape}")
    if targets.shape != h.shape[:2]:
        raise ValueError(f"targets must be [B, T] = {h.shape[:2]}, got {targets.shape}")
    if seq_chunk <= 0:
        raise ValueError(f"seq_chunk must be positive, got {seq_chunk}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 to score tokens, got {temperature}")
    cd = compute_dtype or h.dtype
    B, T, D = h.shape
    c = min(seq_chunk, T)
    n = -(-T // c)
    pad = n * c - T
    h = h.astype(cd)
    w = w.astype(cd)
    if pad:
        h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
    hs = h.reshape(B, n, c, D).swapaxes(0, 1)  # [n, B, c, D]
    ts = targets.reshape(B, n, c).swapaxes(0, 1)  # [n, B, c]
    inv_t = 1.0 / float(temperature)
    body = jax.checkpoint(lambda xs: _chunk_stats(xs[0], w, xs[1], inv_t))
    logp, entropy = jax.lax.map(body, (hs, ts))  # [n, B, c] each
    logp = logp.swapaxes(0, 1).reshape(B, n * c)[:, :T]
    entropy = entropy.swapaxes(0, 1).reshape(B, n * c)[:, :T]
    return logp, entropy


def unroll_layers_for(mesh: Any) -> bool:
    """Whether training steps on `mesh` unroll the layer loop: yes on CPU devices, where XLA:CPU runs the
    backward of a lax.scan over stacked layer weights ~2x slower than unrolled layers (4m-size Qwen2,
    B=64 T=47: 4.4 s vs 2.0 s forward + backward); no on TPU / GPU, where the scan keeps compile time flat
    in depth."""
    return all(d.platform == "cpu" for d in mesh.devices.flat)


def next_token_valid(tokens: jax.Array, segment_ids: jax.Array | None) -> jax.Array:
    """bool [B, T]: token t has a prediction inside its own sequence (t >= 1, same non-zero segment as t-1)."""
    B, T = tokens.shape
    first = jnp.arange(T)[None, :] >= 1
    if segment_ids is None:
        return jnp.broadcast_to(first, (B, T))
    prev = jnp.pad(segment_ids[:, :-1], ((0, 0), (1, 0)))
    return first & (segment_ids == prev) & (segment_ids > 0)


def sequence_token_stats(params: Any, tokens: jax.Array, positions: jax.Array,
                         segment_ids: jax.Array | None = None, *, cfg: ModelConfig,
                         seq_chunk: int = 256, temperature: float = 1.0,
                         unroll_layers: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(logp, entropy, valid), all [B, T], aligned to the TARGET token.

    logp[b, t] = log pi(tokens[b, t] | tokens[b, <t] of its segment) and entropy[b, t] the entropy of
    that next-token distribution, both at `temperature` (softmax(logits / T)); valid[b, t] says a
    prediction exists (false at t = 0 and at the first token of each packed segment), and logp/entropy
    are 0 where it is false. This is the alignment of
    a sampler's per-token logprobs, so rollout_logp / old_logp / loss masks index the same positions.
    unroll_layers: run the layers as an unrolled loop over per-layer slices instead of a lax.scan over the
    stacked weights (the same function; see `unroll_layers_for`).
    """
    if unroll_layers and not isinstance(params["layers"], (tuple, list)):
        params = unstack_layers(params)
    h, _ = hidden_states(params, tokens, positions, segment_ids, cfg=cfg)
    w = lm_head_weight(params, cfg)
    nxt = jnp.pad(tokens[:, 1:], ((0, 0), (0, 1)))  # predicted at position t: tokens[t + 1]
    lp, ent = token_logprobs_and_entropy(h, w, nxt, seq_chunk=seq_chunk, compute_dtype=dtype_of(cfg.dtype),
                                        temperature=temperature)
    valid = next_token_valid(tokens, segment_ids)
    lp = jnp.where(valid, jnp.pad(lp[:, :-1], ((0, 0), (1, 0))), 0.0)
    ent = jnp.where(valid, jnp.pad(ent[:, :-1], ((0, 0), (1, 0))), 0.0)
    return lp, ent, valid
