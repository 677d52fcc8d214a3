"""Gumbel noise of the fused sampling op: finite for every hash value, and sampling with it hits the exact law.

Regression (issue 16.1): a 24-bit uniform u = ((h >> 8) + 0.5) * 2^-24 rounds to exactly 1.0 in float32 at
the top of the grid, making the noise +inf, so that token won whatever its logit (~V / 2^24 per draw).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vagent_jax.kernels.sampling import sample
from vagent_jax.kernels.sampling_reference import GUMBEL_MAX, GUMBEL_MIN, gumbel_noise

_M1, _M2, _GOLDEN = 0x85EBCA6B, 0xC2B2AE35, 0x9E3779B9
_MASK = 0xFFFFFFFF


def _unfmix32(h: np.ndarray) -> np.ndarray:
    """Inverse of the MurmurHash3 finaliser (uint64 arrays holding uint32 values)."""
    h = h ^ (h >> 16)
    h = (h * pow(_M2, -1, 2**32)) & _MASK
    h = h ^ (h >> 13) ^ (h >> 26)
    h = (h * pow(_M1, -1, 2**32)) & _MASK
    return h ^ (h >> 16)


def _cols_hashing_to(h: np.ndarray) -> np.ndarray:
    """int32 column ids whose noise hash under seed 0 is exactly h: h = fmix32(fmix32(col * golden))."""
    inner = _unfmix32(_unfmix32(h.astype(np.uint64)))
    col = (inner * pow(_GOLDEN, -1, 2**32)) & _MASK
    return col.astype(np.uint32).view(np.int32)


def _noise_of_hashes(h: np.ndarray) -> np.ndarray:
    cols = _cols_hashing_to(h)
    return np.asarray(jax.jit(gumbel_noise)(jnp.uint32(0), jnp.asarray(cols)))


def test_inverse_hash_reaches_the_chosen_values():
    h = np.array([0, 1, 2**31, _MASK, 123456789], np.uint64)
    cols = _cols_hashing_to(h)
    from vagent_jax.kernels.sampling_reference import fmix32
    got = fmix32(fmix32(jnp.asarray(cols).astype(jnp.uint32) * jnp.uint32(_GOLDEN)) + jnp.uint32(0))
    np.testing.assert_array_equal(np.asarray(got), h.astype(np.uint32))


def test_noise_is_finite_and_bounded_over_the_whole_grid():
    """Every value of the top 24 bits (low byte 0 and 0xFF), plus the 2^24 hashes at each end of the range,
    where the noise reaches its bounds; the noise is monotone in h, so the ends bound every other value."""
    k = np.arange(2**24, dtype=np.uint64)
    grids = {"top24_low00": k << 8, "top24_lowff": (k << 8) | 0xFF, "lowest": k, "highest": (2**32 - 2**24) + k}
    for name, h in grids.items():
        g = _noise_of_hashes(h)
        assert np.isfinite(g).all(), f"{name}: {np.sum(~np.isfinite(g))} non-finite noise values"
        assert g.min() >= GUMBEL_MIN - 1e-5 and g.max() <= GUMBEL_MAX + 1e-5, (name, g.min(), g.max())
        assert np.all(np.diff(g) >= 0), f"{name}: noise is not monotone in the hash"
    assert abs(_noise_of_hashes(np.array([0], np.uint64))[0] - GUMBEL_MIN) < 1e-5
    assert abs(_noise_of_hashes(np.array([_MASK], np.uint64))[0] - GUMBEL_MAX) < 1e-4


def _wrong_token_rate(vocab: int, dominant: float, rows: int, chunk: int = 1024) -> float:
    """Fraction of `rows` draws (T = 1, no truncation) that do not pick token 0 of logits (dominant, 0, ..., 0)."""
    logits = jnp.zeros((chunk, vocab), jnp.float32).at[:, 0].set(dominant)
    t, k, tp, mp = (jnp.ones((chunk,)), jnp.zeros((chunk,), jnp.int32), jnp.ones((chunk,)), jnp.zeros((chunk,)))
    draw = jax.jit(lambda x, key: sample(x, key, t, k, tp, mp, conf_k=1).token)  # x an argument: no folding
    wrong = sum(int((np.asarray(draw(logits, jax.random.key(i))) != 0).sum()) for i in range(rows // chunk))
    return wrong / rows


def test_wrong_token_rate_with_one_dominant_logit_is_exact():
    """V = 32k, token 0 has logit d, the rest 0: a wrong token has probability p = (V - 1) / (e^d + V - 1).
    At p = 0.002 the rate is within 3 sigma of p; at d = 25 (p = 4.5e-7) no wrong token may appear, where a
    noise value of +inf (any hash at the top of a 24-bit grid) picked one in ~V / 2^24 = 0.2% of the draws."""
    vocab, rows = 32768, 8192
    for p in (0.002, None):
        d = 25.0 if p is None else float(np.log((vocab - 1) * (1 - p) / p))
        exact = (vocab - 1) / (np.exp(d) + vocab - 1)
        rate = _wrong_token_rate(vocab, d, rows)
        sigma = np.sqrt(exact * (1 - exact) / rows)
        assert abs(rate - exact) < 3 * sigma, \
            f"d={d:.2f}: wrong-token rate {rate:.6f} vs exact {exact:.2e} (sigma {sigma:.1e})"
