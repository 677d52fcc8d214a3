"""Fused sampling op: hand-worked reference cases, kernel == reference, sampling law, masking, NaN rows,
greedy, config validation, and an AOT compile of the Pallas kernel for TPU v5e."""
from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from scipy import stats

from vagent_jax.config import ConfigError, from_dict
from vagent_jax.engine import SamplingConfig
from vagent_jax.kernels.sampling import sample
from vagent_jax.kernels.sampling_pallas import fused_sampling_pass, sample_pallas
from vagent_jax.kernels.sampling_reference import (
    _candidate_threshold, _sorted_threshold, admission_threshold, inverse_temperature, top_k_largest,
)

LN2 = math.log(2.0)
# probabilities 1/2, 1/4, 1/8, 1/8 at T = 1 (logits are log 4, log 2, log 1, log 1; sum of weights 8)
HAND = np.log(np.array([4.0, 2.0, 1.0, 1.0], np.float32))


def rows(n, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0):
    """Per-row parameter arrays; scalars are broadcast to n rows."""
    return SamplingConfig(temperature, top_k, top_p, min_p).row_arrays(n)


def run(logits, params, impl="reference", seed=0, **kw):
    return sample(jnp.asarray(logits), jax.random.key(seed), *params, impl=impl, **kw)


def test_hand_worked_plain_t1():
    out = run(np.tile(HAND, (64, 1)), rows(64), conf_k=2, num_top_logprobs=3)
    # H = -(1/2 ln 1/2 + 1/4 ln 1/4 + 2 * 1/8 ln 1/8) = (1/2 + 1/2 + 3/4) ln 2 = 1.75 ln 2 = 1.21301
    np.testing.assert_allclose(out.entropy, 1.75 * LN2, rtol=1e-6)
    # DeepConf, k = 2: -(ln 1/2 + ln 1/4) / 2 = (1 + 2) ln 2 / 2 = 1.5 ln 2
    np.testing.assert_allclose(out.confidence, 1.5 * LN2, rtol=1e-6)
    # top-3 T=1 log-probs: ln 1/2, ln 1/4, ln 1/8
    np.testing.assert_allclose(out.top_logprobs[0], [-LN2, -2 * LN2, -3 * LN2], rtol=1e-6)
    np.testing.assert_array_equal(out.top_ids[0, :2], [0, 1])
    # without truncation the sampling distribution is the T=1 softmax: both log-probs equal ln p[token]
    expected = np.log(np.array([0.5, 0.25, 0.125, 0.125]))[np.asarray(out.token)]
    np.testing.assert_allclose(out.logprob, expected, rtol=1e-6)
    np.testing.assert_allclose(out.sample_logprob, expected, rtol=1e-6)
    assert not np.any(out.nonfinite)


def test_hand_worked_temperature_two():
    out = run(HAND[None], rows(1, temperature=2.0))
    # z = x/2: weights sqrt(4, 2, 1, 1) = 2, 1.41421, 1, 1; S = 5.41421; ln S = 1.68902
    # H = ln S - sum w z / S = 1.68902 - (2 ln 2 + 1.41421 * 0.5 ln 2) / 5.41421 = 1.68902 - 0.34657 = 1.34245
    np.testing.assert_allclose(out.entropy, 1.342454, rtol=1e-5)


@pytest.mark.parametrize(
    "params, admitted, q",
    [
        # top_k = 2 keeps tokens 0, 1; renormalised 1/2 : 1/4 -> 2/3, 1/3
        (dict(top_k=2), [0, 1], [2 / 3, 1 / 3]),
        # top_p = 0.6: mass before each sorted token is 0, .5, .75, .875; keep where < 0.6 -> {0, 1}
        (dict(top_p=0.6), [0, 1], [2 / 3, 1 / 3]),
        # top_p = 0.5: only token 0 has mass-before (0) < 0.5 -> q = 1, log q = 0
        (dict(top_p=0.5), [0], [1.0]),
        # min_p = 0.3: keep p >= 0.3 * 0.5 = 0.15 -> {0, 1}
        (dict(min_p=0.3), [0, 1], [2 / 3, 1 / 3]),
        # top_k = 3 ties tokens 2 and 3 at the threshold: both pass (documented), q = p
        (dict(top_k=3), [0, 1, 2, 3], [0.5, 0.25, 0.125, 0.125]),
    ],
)
def test_hand_worked_truncation(params, admitted, q):
    out = run(np.tile(HAND, (256, 1)), rows(256, **params))
    tokens = np.asarray(out.token)
    assert set(tokens.tolist()) <= set(admitted)
    lookup = dict(zip(admitted, np.log(q)))
    np.testing.assert_allclose(out.sample_logprob, [lookup[t] for t in tokens], rtol=1e-6, atol=1e-7)
    # the T=1 log-prob and the entropy ignore truncation
    np.testing.assert_allclose(out.logprob, np.log([0.5, 0.25, 0.125, 0.125])[tokens], rtol=1e-6)
    np.testing.assert_allclose(out.entropy, 1.75 * LN2, rtol=1e-6)


def test_masked_tokens_and_confidence():
    logits = np.tile(np.array([0.0, -np.inf, 0.0, -np.inf, 1.0, -np.inf], np.float32), (128, 1))
    params = rows(128, temperature=1.5, top_k=2)
    out = run(logits, params, conf_k=6)
    # top_k = 2 admits logits {1.0, 0.0, 0.0} (tie at the threshold 0.0); -inf entries never
    assert set(np.asarray(out.token).tolist()) <= {0, 2, 4}
    # p = (1, 1, e) / (2 + e); -inf tokens are left out of the confidence mean (3 finite of k = 6):
    # C = lse - (0 + 0 + 1) / 3 = ln(2 + e) - 1/3
    np.testing.assert_allclose(out.confidence, math.log(2 + math.e) - 1 / 3, rtol=1e-6)
    assert not np.any(out.nonfinite)


def test_nonfinite_rows_flagged_others_intact():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 300)).astype(np.float32)
    logits[1, 17] = np.nan
    logits[4, 3] = np.inf
    logits[6, :] = -np.inf
    out = run(logits, rows(8, temperature=0.9, top_p=0.95), conf_k=5, num_top_logprobs=2)
    np.testing.assert_array_equal(out.nonfinite, [0, 1, 0, 0, 1, 0, 1, 0])
    for bad_row in (1, 4, 6):
        assert out.token[bad_row] == 0
        for field in ("logprob", "sample_logprob", "entropy", "confidence", "top_logprobs"):
            assert np.all(np.asarray(getattr(out, field))[bad_row] == 0.0), field
    good = [0, 2, 3, 5, 7]
    for field in ("logprob", "sample_logprob"):
        assert np.all(np.isfinite(np.asarray(getattr(out, field))[good])), field
    # the other rows' statistics are those of their own logits, computed here in float64
    x = logits[good].astype(np.float64)
    logp1 = x - np.log(np.exp(x).sum(-1, keepdims=True))
    z = x / 0.9
    logpt = z - np.log(np.exp(z).sum(-1, keepdims=True))
    np.testing.assert_allclose(out.entropy[np.array(good)], -(np.exp(logpt) * logpt).sum(-1), rtol=1e-5)
    top5 = -np.sort(-logp1, axis=-1)[:, :5]
    np.testing.assert_allclose(out.confidence[np.array(good)], -top5.mean(-1), rtol=1e-5)
    np.testing.assert_allclose(out.top_logprobs[np.array(good)], top5[:, :2], rtol=1e-5)


def test_greedy():
    logits = np.random.default_rng(1).normal(size=(16, 500)).astype(np.float32)
    out = run(logits, rows(16, temperature=0.0, top_k=3, top_p=0.5, min_p=0.5))
    np.testing.assert_array_equal(out.token, logits.argmax(-1))
    np.testing.assert_array_equal(out.sample_logprob, 0.0)
    # greedy rows report the T = 1 entropy
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(out.entropy, -(p * np.log(p)).sum(-1), rtol=1e-5)


def _mixed_params(batch):
    pattern = [(1.0, 0, 1.0, 0.0), (0.7, 7, 1.0, 0.0), (0.0, 0, 1.0, 0.0), (1.3, 40, 0.8, 0.0),
               (1.0, 0, 0.9, 0.05), (0.5, 0, 1.0, 0.1), (2.0, 100, 0.95, 0.02), (1.0, 1, 1.0, 0.0)]
    t, k, p, m = zip(*(pattern[i % len(pattern)] for i in range(batch)))
    return (jnp.array(t, jnp.float32), jnp.array(k, jnp.int32), jnp.array(p, jnp.float32),
            jnp.array(m, jnp.float32))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_kernel_matches_reference(dtype):
    # V = 1000 is not a multiple of the 256 tile: the last tile runs past V and must be masked.
    # The batch mixes greedy / plain / truncated rows, masked (-inf) tokens and non-finite rows.
    x = np.array(jax.random.normal(jax.random.key(3), (16, 1000)) * 3.0)
    x[3, ::3] = -np.inf
    x[9, :990] = -np.inf  # only the last tile holds finite logits
    x[10, 500] = np.nan
    x[12, :] = -np.inf
    x[13, 999] = np.inf
    logits = jnp.asarray(x).astype(dtype)
    params = _mixed_params(16)
    for seed in (0, 1):
        key = jax.random.key(seed)
        ref = sample(logits, key, *params, num_top_logprobs=5, impl="reference")
        ker = sample_pallas(logits, key, *params, num_top_logprobs=5, interpret=True, block_v=256)
        np.testing.assert_array_equal(ker.token, ref.token)
        np.testing.assert_array_equal(ker.nonfinite, x_bad := np.isin(np.arange(16), [10, 12, 13]))
        finite = ~x_bad & (np.arange(16) != 9)  # row 9 has only 10 finite logits: ids of -inf unspecified
        np.testing.assert_array_equal(np.asarray(ker.top_ids)[finite], np.asarray(ref.top_ids)[finite])
        np.testing.assert_array_equal(ker.nonfinite, ref.nonfinite)
        for field in ("logprob", "sample_logprob", "entropy", "confidence", "top_logprobs"):
            np.testing.assert_allclose(getattr(ker, field), getattr(ref, field), rtol=1e-5, atol=1e-5,
                                       err_msg=field)


def _expected_law(x, temperature, top_k, top_p, min_p):
    """Truncated sampling law written from the definitions in numpy (float64)."""
    p = np.exp(x / temperature - np.max(x / temperature))
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    keep = np.zeros_like(p, bool)
    k = top_k if top_k > 0 else len(x)
    ranked = p[order[:k]] / p[order[:k]].sum()
    before = np.cumsum(ranked) - ranked
    keep[order[:k][before < top_p]] = True
    keep &= p >= min_p * p.max()
    q = np.where(keep, p, 0.0)
    return q / q.sum()


def test_sampling_law_chi_square():
    x = np.array([2.0, 1.5, 1.2, 1.0, 0.4, 0.0, -0.3, -1.0, -2.0, -4.0], np.float32)
    settings = [(1.0, 0, 1.0, 0.0), (0.7, 3, 1.0, 0.0), (1.0, 0, 0.8, 0.0), (1.5, 0, 1.0, 0.2),
                (0.9, 6, 0.9, 0.05)]
    n = 6000
    params = [np.repeat(np.array(col), n) for col in zip(*settings)]
    batch = n * len(settings)
    out = sample(jnp.tile(jnp.asarray(x), (batch, 1)), jax.random.key(42),
                 jnp.asarray(params[0], jnp.float32), jnp.asarray(params[1], jnp.int32),
                 jnp.asarray(params[2], jnp.float32), jnp.asarray(params[3], jnp.float32))
    tokens = np.asarray(out.token).reshape(len(settings), n)
    for s, setting in enumerate(settings):
        q = _expected_law(x.astype(np.float64), *setting)
        counts = np.bincount(tokens[s], minlength=len(x))
        assert np.all(counts[q == 0] == 0), f"truncated token sampled under {setting}"
        support = q > 0
        chi2 = np.sum((counts[support] - n * q[support]) ** 2 / (n * q[support]))
        # threshold: the 0.999 quantile of chi-square with (support - 1) degrees of freedom
        limit = stats.chi2.ppf(0.999, support.sum() - 1)
        assert chi2 < limit, f"chi2={chi2:.1f} >= {limit:.1f} under {setting}: {counts} vs {n * q}"


@pytest.mark.parametrize("vocab", [4000, 5003])  # 5003: the last block is padded
def test_top_k_largest_matches_lax_top_k_with_ties_and_masks(vocab):
    # integer logits in a small range tie everywhere; rows of masks: mostly -inf, and all -inf
    x = np.array(jax.random.randint(jax.random.key(2), (6, vocab), 0, 6), np.float32)
    x[1] = np.array(jax.random.normal(jax.random.key(4), (vocab,)))
    x[2, : vocab - 7] = -np.inf
    x[3, :] = -np.inf
    x[4, ::2] = -np.inf
    for k in (1, 20, 256):  # 1 and 20 take the blocked path (>= 4k blocks of 32), 256 plain lax.top_k
        want_v, want_i = jax.lax.top_k(jnp.asarray(x), k)
        got_v, got_i = jax.jit(top_k_largest, static_argnums=1)(jnp.asarray(x), k)
        np.testing.assert_array_equal(got_v, want_v)
        np.testing.assert_array_equal(got_i, want_i)


def test_candidate_threshold_matches_full_sort():
    x = jax.random.normal(jax.random.key(5), (8, 400)) * jnp.array([[4.0], [0.3]] * 4)  # peaked / flat rows
    _, inv_t = inverse_temperature(jnp.full((8,), 0.8))
    top_k = jnp.array([5, 0, 0, 0, 30, 300, 0, 3], jnp.int32)
    top_p = jnp.array([1.0, 1.0, 0.9, 0.9, 0.7, 1.0, 0.5, 0.2], jnp.float32)
    tau, exact = jax.jit(_candidate_threshold, static_argnums=4)(x, inv_t, top_k, top_p, 32)
    full = jax.jit(_sorted_threshold)(x, inv_t, top_k, top_p)
    threshold = jax.jit(admission_threshold, static_argnames="candidates")
    # rows 0, 4, 7: top_k <= 32; row 1: no truncation; row 2: peaked nucleus inside the 32 candidates;
    # row 3: flat row, 0.9 of the mass needs far more than 32 tokens; row 5: top_k = 300 > 32
    np.testing.assert_array_equal(exact, [1, 1, 1, 0, 1, 0, 1, 1])
    np.testing.assert_array_equal(np.asarray(tau)[[0, 2, 4, 6, 7]], np.asarray(full)[[0, 2, 4, 6, 7]])
    assert tau[1] == -np.inf
    # the public pre-pass falls back to the sort when a row is not exact, and agrees with it either way
    t = jnp.full((8,), 0.8)
    zero = jnp.zeros((8,))
    np.testing.assert_array_equal(threshold(x, t, top_k, top_p, zero, candidates=32), full)
    rows_ok = np.array([0, 2, 4, 6, 7])
    sub = threshold(x[rows_ok], t[rows_ok], top_k[rows_ok], top_p[rows_ok], zero[rows_ok], candidates=32)
    np.testing.assert_array_equal(sub, np.asarray(full)[rows_ok])


def test_sampling_config_validation():
    SamplingConfig().validate(vocab_size=100)
    bad = [(dict(temperature=-0.1), "temperature"), (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"),
           (dict(top_k=-1), "top_k"), (dict(min_p=1.0), "min_p"), (dict(min_p=-0.1), "min_p"),
           (dict(conf_k=0), "conf_k")]
    for kwargs, key in bad:
        with pytest.raises(ConfigError, match=f"'{key}'"):
            SamplingConfig(**kwargs).validate()
    with pytest.raises(ConfigError, match="'top_k'"):
        SamplingConfig(top_k=101).validate(vocab_size=100)
    with pytest.raises(ConfigError, match="'sampling.top_p'"):
        from_dict(SamplingConfig, {"top_p": 2.0}, prefix="sampling")


def test_bad_inputs_name_the_tensor():
    logits = jnp.zeros((4, 10))
    t, k, p, m = rows(4)
    with pytest.raises(ValueError, match="top_p"):
        sample(logits, jax.random.key(0), t, k, p[:3], m)
    with pytest.raises(ValueError, match="top_k"):
        sample(logits, jax.random.key(0), t, k.astype(jnp.float32), p, m)
    with pytest.raises(ValueError, match="conf_k"):
        sample(logits, jax.random.key(0), t, k, p, m, conf_k=0)
    with pytest.raises(ValueError, match="logits"):
        sample(logits[0], jax.random.key(0), t, k, p, m)
    with pytest.raises(ValueError, match="impl"):
        sample(logits, jax.random.key(0), t, k, p, m, impl="cuda")


def _v5e_mesh():
    pytest.importorskip("libtpu")
    # compile-only use of libtpu; other test processes may hold its lock file at the same time
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies

    topo = topologies.get_topology_desc(platform="tpu", topology_name="v5e:2x2", chip_config_name="default",
                                        chips_per_host_bounds=(2, 2, 1), num_slices=1)
    return Mesh(np.array(topo.devices).reshape(4), ("data",))


def _compile_rows_sharded(mesh, fn, shapes):
    """AOT-compile fn under shard_map with every argument split by rows over the 4 v5e chips."""
    def step(*args):
        return jax.shard_map(fn, mesh=mesh, in_specs=(P("data"),) * len(args), out_specs=P("data"))(*args)

    args = [jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, P("data", *(None,) * (len(shape) - 1))))
            for shape, dtype in shapes]
    return jax.jit(step, out_shardings=NamedSharding(mesh, P("data"))).lower(*args).compile()


def test_pallas_kernel_compiles_for_tpu_v5e():
    mesh = _v5e_mesh()
    batch, vocab = 32, 4000  # 8 rows per chip (one (8, 128)-aligned row block); V not a multiple of 2048
    shapes = [((batch, vocab), jnp.bfloat16), ((batch,), jnp.float32), ((batch,), jnp.float32)]
    compiled = _compile_rows_sharded(mesh, lambda *a: fused_sampling_pass(*a, top_slots=20), shapes)
    assert "tpu_custom_call" in compiled.as_text()  # the Pallas kernel went through Mosaic
    assert compiled.memory_analysis().argument_size_in_bytes > 0


@pytest.mark.slow
def test_full_pallas_op_compiles_for_tpu_v5e():
    mesh = _v5e_mesh()
    batch, vocab = 64, 151936

    def local(logits, temperature, top_k, top_p, min_p):
        # distinct noise per chip: fold the shard index into the key (row seeds are per local row)
        key = jax.random.fold_in(jax.random.key(0), jax.lax.axis_index("data"))
        return sample_pallas(logits, key, temperature, top_k, top_p, min_p, num_top_logprobs=4)

    shapes = [((batch, vocab), jnp.bfloat16), ((batch,), jnp.float32), ((batch,), jnp.int32),
              ((batch,), jnp.float32), ((batch,), jnp.float32)]
    compiled = _compile_rows_sharded(mesh, local, shapes)
    assert "tpu_custom_call" in compiled.as_text()
