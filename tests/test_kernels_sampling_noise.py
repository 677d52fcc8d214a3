"""Sampling noise of the fused sampling op: the per-row uniform reaches both ends of its grid and never 1,
and sampling with it hits the exact law where one token dominates a wide row.

Regression (issue 16.1, Gumbel noise then): a 24-bit uniform that rounded to exactly 1.0 made a token's noise
+inf, so that token won whatever its logit (~V / 2^24 per draw). The inverse-CDF draw's uniform u is
(h >> 8) * 2^-24 for a 32-bit hash h, at most 1 - 2^-24; the wrong-token-rate test below is the law check.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vagent_jax.kernels.sampling import sample
from vagent_jax.kernels.sampling_draw import _DRAW_SALT, row_uniform

_M1, _M2 = 0x85EBCA6B, 0xC2B2AE35
_MASK = 0xFFFFFFFF


def _unfmix32(h: np.ndarray) -> np.ndarray:
    """Inverse of the MurmurHash3 finaliser (uint64 arrays holding uint32 values)."""
    h = h ^ (h >> 16)
    h = (h * pow(_M2, -1, 2**32)) & _MASK
    h = h ^ (h >> 13) ^ (h >> 26)
    h = (h * pow(_M1, -1, 2**32)) & _MASK
    return h ^ (h >> 16)


def _seeds_hashing_to(h: np.ndarray) -> np.ndarray:
    """uint32 row seeds whose draw hash fmix32(seed ^ salt) is exactly h."""
    return (_unfmix32(h.astype(np.uint64)) ^ int(_DRAW_SALT)).astype(np.uint32)


def test_uniform_covers_its_grid_and_stays_below_one():
    """Every value of the top 24 bits (low byte 0 and 0xFF) maps to k * 2^-24, k = h >> 8, in order."""
    k = np.arange(2**24, dtype=np.uint64)
    for low in (0x00, 0xFF):
        u = np.asarray(jax.jit(row_uniform)(jnp.asarray(_seeds_hashing_to((k << 8) | low))))
        np.testing.assert_array_equal(u, k.astype(np.float64) * 2.0**-24)
    assert u.max() == 1.0 - 2.0**-24 < 1.0


def _wrong_token_rate(vocab: int, dominant: float, rows: int, chunk: int = 1024) -> float:
    """Fraction of `rows` draws (T = 1, no truncation) that do not pick token 0 of logits (dominant, 0, ..., 0)."""
    logits = jnp.zeros((chunk, vocab), jnp.float32).at[:, 0].set(dominant)
    t, k, tp, mp = (jnp.ones((chunk,)), jnp.zeros((chunk,), jnp.int32), jnp.ones((chunk,)), jnp.zeros((chunk,)))
    draw = jax.jit(lambda x, key: sample(x, key, t, k, tp, mp, conf_k=1).token)  # x an argument: no folding
    wrong = sum(int((np.asarray(draw(logits, jax.random.key(i))) != 0).sum()) for i in range(rows // chunk))
    return wrong / rows


def test_wrong_token_rate_with_one_dominant_logit_is_exact():
    """V = 32k, token 0 has logit d, the rest 0: a wrong token has probability p = (V - 1) / (e^d + V - 1).
    At p = 0.002 the rate is within 3 sigma of p; at d = 25 (p = 4.5e-7) no wrong token may appear, where
    the former Gumbel noise of +inf (a hash at the top of a 24-bit grid) picked one in ~V / 2^24 = 0.2%."""
    vocab, rows = 32768, 8192
    for p in (0.002, None):
        d = 25.0 if p is None else float(np.log((vocab - 1) * (1 - p) / p))
        exact = (vocab - 1) / (np.exp(d) + vocab - 1)
        rate = _wrong_token_rate(vocab, d, rows)
        sigma = np.sqrt(exact * (1 - exact) / rows)
        assert abs(rate - exact) < 3 * sigma, \
            f"d={d:.2f}: wrong-token rate {rate:.6f} vs exact {exact:.2e} (sigma {sigma:.1e})"
