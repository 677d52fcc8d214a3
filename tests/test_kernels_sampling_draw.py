"""Inverse-CDF token draw of the fused sampling op: hand-worked class-major order, the rounding guard, the
sampling law at V > C (two-level draw, padded row), the entropy pass's class sums equal to the draw's
bitwise, and kernel == reference tokens on batches without truncation (where the reference reuses them)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vagent_jax.kernels.sampling import sample
from vagent_jax.kernels.sampling_draw import CHUNK_ROWS, NUM_CLASSES, admitted_class_mass, draw_tokens, row_uniform
from vagent_jax.kernels.sampling_pallas import sample_pallas
from vagent_jax.kernels.sampling_reference import tempered_class_sums

C = NUM_CLASSES


def _draw(x, u, tau=None, inv_t=1.0):
    """draw_tokens on rows of x [B, V] at one uniform per row (argmax fallback)."""
    x = jnp.asarray(x, jnp.float32)
    batch = x.shape[0]
    tau = jnp.full((batch,), -jnp.inf) if tau is None else jnp.asarray(tau, jnp.float32)
    inv = jnp.full((batch,), inv_t, jnp.float32)
    m = jnp.max(x, axis=-1)
    return np.asarray(jax.jit(draw_tokens)(x, inv, tau, m, jnp.asarray(u, jnp.float32), jnp.argmax(x, -1)))


def test_hand_worked_class_major_inverse_cdf():
    # V = 2C: class c holds columns c and C + c. Live tokens (weights 1, 2, 1, 4 of 8): 5, C + 5, 7, C + 7,
    # in class-major order 5, C + 5 (class 5: mass 3/8), then 7, C + 7 (class 7: mass 5/8).
    x = np.full((1, 2 * C), -np.inf, np.float32)
    x[0, [5, C + 5, 7, C + 7]] = np.log([1.0, 2.0, 1.0, 4.0])
    cuts = {0.0: 5, 0.124: 5, 0.126: C + 5, 0.374: C + 5, 0.376: 7, 0.499: 7, 0.501: C + 7, 1 - 2**-24: C + 7}
    for u, want in cuts.items():
        assert _draw(x, [u])[0] == want, (u, want)
    # tau = log 2 admits C + 5 and C + 7 only (weights 2 : 4)
    for u, want in {0.0: C + 5, 0.33: C + 5, 0.34: C + 7, 0.99: C + 7}.items():
        assert _draw(x, [u], tau=[np.log(2.0)])[0] == want, (u, want)


def test_rounding_past_the_total_picks_the_last_live_token():
    # u * total can round up to the total; the draw then takes the last class (and member) with weight,
    # never a weightless or padded column. Row 0: every token live; row 1: the last live token is column 0.
    x = np.zeros((2, 300), np.float32)
    x[1, 1:] = -np.inf
    tokens = _draw(x, [1.0, 1.0])  # u = 1 is outside row_uniform's range: the worst rounding case
    assert tokens[1] == 0
    # class-major order ends with the last class's last member: column 2C + (C - 1) is past V = 300, so
    # the last live member of class C - 1 is column C + (C - 1) = 255
    assert tokens[0] == C + C - 1


def test_row_uniform_is_below_one_on_its_grid():
    seeds = jnp.arange(200_000, dtype=jnp.uint32) * jnp.uint32(2654435761)
    u = np.asarray(jax.jit(row_uniform)(seeds))
    assert u.min() >= 0.0 and u.max() < 1.0
    np.testing.assert_array_equal(u * 2**24, np.round(u * 2**24))  # multiples of 2^-24
    # uniform: a Kolmogorov-Smirnov test at the 0.001 level
    assert stats.kstest(u, "uniform").pvalue > 1e-3


def _chi_square_ok(tokens, q, n, label):
    """Chi-square of token counts against n * q, bins with expected count < 5 pooled; 0.999 quantile."""
    counts = np.bincount(tokens, minlength=len(q)).astype(np.float64)
    assert np.all(counts[q == 0] == 0), f"{label}: a token with probability 0 was sampled"
    big = n * q >= 5
    obs = np.append(counts[big], counts[~big & (q > 0)].sum())
    exp = np.append(n * q[big], n * q[~big & (q > 0)].sum())
    keep = exp > 0
    chi2 = np.sum((obs[keep] - exp[keep]) ** 2 / exp[keep])
    limit = stats.chi2.ppf(0.999, keep.sum() - 1)
    assert chi2 < limit, f"{label}: chi2 {chi2:.1f} >= {limit:.1f} ({keep.sum()} bins)"


def test_sampling_law_with_classes_of_several_members():
    """V = 1000 (8 members per class, the last class row padded): the draw follows softmax(x / T), and
    top-k's truncated law, by chi-square at the 0.999 quantile over 40k draws per setting."""
    vocab, n = 1000, 40_000
    x = np.array(jax.random.normal(jax.random.key(7), (vocab,)) * 1.5, np.float32)
    x[::7] = -np.inf  # masked tokens: probability 0
    for temperature, top_k in ((1.0, 0), (0.6, 0), (1.3, 50)):
        z = np.where(np.isfinite(x), x.astype(np.float64) / temperature, -np.inf)
        if top_k:
            z = np.where(x >= np.sort(x)[-top_k], z, -np.inf)
        q = np.exp(z - z.max())
        q /= q.sum()
        t = jnp.full((n,), temperature, jnp.float32)
        out = sample(jnp.tile(jnp.asarray(x), (n, 1)), jax.random.key(11), t, jnp.full((n,), top_k, jnp.int32),
                     jnp.ones((n,)), jnp.zeros((n,)), conf_k=1)
        _chi_square_ok(np.asarray(out.token), q, n, f"T={temperature} top_k={top_k}")


def test_entropy_class_sums_are_the_draws_class_masses_bitwise():
    # the reference reuses the entropy pass's class sums as the draw's class masses when no row truncates;
    # the Pallas path computes them with admitted_class_mass: equal bits keep their tokens identical.
    # V = 17000: 133 class rows = 2 chunks of CHUNK_ROWS plus a tail of 5, the last row padded
    assert divmod(-(-17000 // C), CHUNK_ROWS) == (2, 5)
    x = np.array(jax.random.normal(jax.random.key(5), (16, 17000)) * 4.0, np.float32)
    x[2, ::3] = -np.inf
    x[5, :] = -np.inf
    x[5, 17] = 3.0
    inv_t = jnp.asarray(np.linspace(0.5, 2.0, 16), jnp.float32)
    m = jnp.max(jnp.asarray(x), axis=-1)
    e_class, _ = jax.jit(tempered_class_sums)(jnp.asarray(x), inv_t, m)
    mass = jax.jit(admitted_class_mass)(jnp.asarray(x), inv_t, m, jnp.full((16,), -jnp.inf))
    np.testing.assert_array_equal(np.asarray(e_class), np.asarray(mass))


@pytest.mark.parametrize("vocab", [1000, 9000])  # 9000: the chunked class sums' loop runs (71 class rows)
def test_kernel_matches_reference_without_truncation(vocab):
    x = jnp.asarray(jax.random.normal(jax.random.key(9), (16, vocab)) * 3.0)
    t = jnp.asarray([1.0, 0.7, 0.0, 1.6] * 4, jnp.float32)
    k, p, mp = jnp.zeros((16,), jnp.int32), jnp.ones((16,)), jnp.zeros((16,))
    for seed in range(4):
        ref = sample(x, jax.random.key(seed), t, k, p, mp)
        ker = sample_pallas(x, jax.random.key(seed), t, k, p, mp, interpret=True, block_v=2048)
        np.testing.assert_array_equal(ker.token, ref.token)
        np.testing.assert_allclose(ker.entropy, ref.entropy, rtol=1e-5, atol=1e-5)
