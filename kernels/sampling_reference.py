"""Pure-jnp reference of the fused sampling op, plus the pieces the Pallas kernel shares with it.

The reference is the specification: it materialises [B, V] float32 arrays freely. The kernel
(`sampling_pallas.py`) must return the same tokens and, within float32 rounding, the same numbers. To get
identical tokens both draw through `sampling_draw.draw_tokens` (inverse CDF with one uniform per row, from
a counter-based hash of the per-row seed) on the same logits, the same exact row max and the same per-row
threshold tau from `admission_threshold`.

Semantics, per row b with logits x (cast to float32), temperature T, truncation (top_k, top_p, min_p):
  greedy       T == 0: token = argmax x (first index on ties); truncation is ignored (argmax survives it).
  sampling     q = softmax(x / T) truncated to the admitted set A = {v : x_v >= tau_b, x_v > -inf} and
               renormalised; token ~ q by inverse CDF over A (in `sampling_draw`'s class-major order)
               with one uniform u_b in [0, 1) on a 2^-24 grid per row.
  logprob      log softmax(x)[token] at temperature 1 (what the RL importance ratio uses).
  sample_logprob  log q[token] = x_tok/T - logsumexp_{v in A}(x_v/T); 0.0 for greedy rows.
  entropy      H(softmax(x/T)) before truncation, = -sum_v p_v log p_v; greedy rows use T = 1.
  confidence   DeepConf C = -(1/k) sum_{j<=k} log P(j) over the k = conf_k largest T=1 probabilities;
               tokens with a -inf logit (probability 0) are left out of the mean (k counts the rest).
  nonfinite    the row holds a NaN or +inf logit, or no finite logit at all. -inf alone is a valid mask.
               Such a row returns token 0 and 0.0 for every float output; other rows are unaffected.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from vagent_jax.kernels.sampling_draw import admitted_class_mass, choose_tokens, chunked_class_sums, class_view
from vagent_jax.kernels.sampling_seeds import fmix32, position_seeds, row_seeds  # noqa: F401  (re-exported)

TOP_P_CANDIDATES = 256  # logits examined for top-k/top-p before falling back to a full sort


class SampleOutput(NamedTuple):
    """Per-row results of `sample` (B rows; N = num_top_logprobs)."""

    token: jax.Array  # [B] int32
    logprob: jax.Array  # [B] f32, log softmax(logits)[token] at T = 1
    sample_logprob: jax.Array  # [B] f32, log-prob under the tempered, truncated distribution
    entropy: jax.Array  # [B] f32, entropy of softmax(logits / T) before truncation
    confidence: jax.Array  # [B] f32, DeepConf token confidence over the top conf_k tokens
    top_logprobs: jax.Array  # [B, N] f32, T = 1 log-probs, descending
    top_ids: jax.Array  # [B, N] int32
    nonfinite: jax.Array  # [B] bool


def top_k_with_max(x: jax.Array, k: int, block: int = 32) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(vals, ids, row_max): lax.top_k(x, k) over rows of x [B, V] (same values and ids, ties to the lowest
    id), faster for large V, plus jnp.max(x, axis=-1) from the same block maxima (no pass of its own).

    Each of the k largest entries lies in one of the k blocks (of `block` columns) with the largest block
    maxima, so a wide row is reduced to those k * block candidates (block order kept, so ties still
    resolve to the lowest id) before lax.top_k. XLA:CPU's TopK costs ~linear in V per row: at V = 32k,
    B = 64, k = 20 this is ~5x faster. Narrow rows (fewer than 4k blocks) go straight to lax.top_k.
    """
    batch, vocab = x.shape
    n_blocks = -(-vocab // block)
    if n_blocks < 4 * k:
        vals, ids = jax.lax.top_k(x, k)
        return vals, ids, jnp.max(x, axis=-1)
    pad = n_blocks * block - vocab
    xb = (jnp.pad(x, ((0, 0), (0, pad)), constant_values=-jnp.inf) if pad else x).reshape(batch, n_blocks, block)
    block_max = jnp.max(xb, axis=-1)
    _, blocks = jax.lax.top_k(block_max, k)
    blocks = jnp.sort(blocks, axis=-1)
    cand = jnp.take_along_axis(xb, blocks[:, :, None], axis=1).reshape(batch, k * block)
    vals, j = jax.lax.top_k(cand, k)
    # the barrier keeps the row max a reduce of the block maxima (XLA would re-read x for a full max)
    row_max = jnp.max(jax.lax.optimization_barrier(block_max), axis=-1)
    return vals, jnp.take_along_axis(blocks, j // block, axis=-1) * block + j % block, row_max


def top_k_largest(x: jax.Array, k: int, block: int = 32) -> tuple[jax.Array, jax.Array]:
    """lax.top_k(x, k) over rows of x [B, V] (same values and ids, ties to the lowest id): `top_k_with_max`."""
    vals, ids, _ = top_k_with_max(x, k, block)
    return vals, ids


def inverse_temperature(temperature: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(greedy [B] bool, inv_t [B] f32): greedy where T == 0, inv_t = 1/T there else 1 (T = 1 for entropy)."""
    greedy = temperature <= 0.0
    inv_t = jnp.where(greedy, 1.0, 1.0 / jnp.where(greedy, 1.0, temperature)).astype(jnp.float32)
    return greedy, inv_t


def _sorted_threshold(x: jax.Array, inv_t: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """[B] logit threshold of top-k then top-p (on the tempered, top-k-renormalised probabilities)."""
    _, vocab = x.shape
    xs = -jnp.sort(-x, axis=-1)  # [B, V] descending
    pos = jnp.arange(vocab, dtype=jnp.int32)[None, :]
    k_eff = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab).astype(jnp.int32)
    in_k = pos < k_eff[:, None]
    z = jnp.where(in_k, xs * inv_t[:, None], -jnp.inf)
    p = jax.nn.softmax(z, axis=-1)
    before = jnp.cumsum(p, axis=-1) - p  # probability mass strictly before each position
    keep = in_k & (before < top_p[:, None])
    n_keep = jnp.where(top_p >= 1.0, k_eff, jnp.maximum(jnp.sum(keep, axis=-1), 1))
    return jnp.take_along_axis(xs, (n_keep - 1)[:, None], axis=-1)[:, 0]


def _candidate_threshold(
    x: jax.Array, inv_t: jax.Array, top_k: jax.Array, top_p: jax.Array, candidates: int
) -> tuple[jax.Array, jax.Array]:
    """Top-k/top-p threshold from the `candidates` largest logits only: ([B] tau, [B] bool exact).

    A row is exact when its top-k set fits in the candidates (top_k <= C), or when it has no top-k and
    the candidates already hold top_p of the tempered mass (normalised by the full-row logsumexp), so
    the top-p prefix ends inside them.
    """
    _, vocab = x.shape
    vals, _ = top_k_largest(x, candidates)  # [B, C] descending
    pos = jnp.arange(candidates, dtype=jnp.int32)[None, :]
    k_eff = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab).astype(jnp.int32)
    fits = k_eff <= candidates
    in_k = pos < k_eff[:, None]
    z = jnp.where(in_k, vals * inv_t[:, None], -jnp.inf)
    lse_full = jax.nn.logsumexp(x * inv_t[:, None], axis=-1)
    lse = jnp.where(fits, jax.nn.logsumexp(z, axis=-1), lse_full)
    p = jnp.exp(z - lse[:, None])
    before = jnp.cumsum(p, axis=-1) - p
    keep = in_k & (before < top_p[:, None])
    n_keep = jnp.where(top_p >= 1.0, jnp.minimum(k_eff, candidates), jnp.maximum(jnp.sum(keep, axis=-1), 1))
    tau = jnp.take_along_axis(vals, (n_keep - 1)[:, None], axis=-1)[:, 0]
    no_cut = (top_k <= 0) & (top_p >= 1.0)
    exact = fits | no_cut | ((k_eff == vocab) & (top_p < 1.0) & (jnp.sum(p, axis=-1) >= top_p))
    return jnp.where(no_cut, -jnp.inf, tau), exact


def admission_threshold(
    x: jax.Array, temperature: jax.Array, top_k: jax.Array, top_p: jax.Array, min_p: jax.Array,
    *, candidates: int = TOP_P_CANDIDATES,
) -> jax.Array:
    """[B] f32 threshold tau: a token is admitted iff x_v >= tau (and x_v > -inf); -inf = no truncation.

    Order as in common samplers: temperature, top-k, top-p (smallest prefix of the descending tempered
    probabilities, renormalised after top-k, whose mass reaches top_p), min-p (q_v >= min_p * q_max, i.e.
    x_v >= max x + T log min_p; it commutes with renormalisation). tau = max of the three thresholds.
    Cost and exactness: when some sampling row has top_k > 0 or top_p < 1, the threshold comes from the
    `candidates` largest logits (top_k_largest); if any such row is not decided exactly by them (top_k > C,
    or a nucleus larger than C tokens) the batch falls back to a full sort (lax.cond). Ties at the
    boundary admit every token equal to tau (so > k tokens can pass top-k on exact ties), and the top-p
    boundary is decided on a float32 cumulative sum. Greedy rows get -inf. The logits are read only
    when some sampling row truncates (a max for min-p, top_k_largest for top-k/top-p).
    """
    greedy, inv_t = inverse_temperature(temperature)
    no_threshold = lambda: jnp.full_like(x[:, 0], -jnp.inf)  # noqa: E731  full_like keeps shard_map's axes
    tau_min_p = jax.lax.cond(
        jnp.any(~greedy & (min_p > 0.0)),
        lambda: jnp.where(min_p > 0.0, jnp.max(x, axis=-1) + jnp.log(jnp.maximum(min_p, 1e-30)) / inv_t, -jnp.inf),
        no_threshold,
    )
    truncating = ~greedy & ((top_k > 0) | (top_p < 1.0))
    candidates = min(candidates, x.shape[1])

    def from_candidates():
        tau, exact = _candidate_threshold(x, inv_t, top_k, top_p, candidates)
        return jax.lax.cond(
            jnp.all(exact | ~truncating), lambda: tau, lambda: _sorted_threshold(x, inv_t, top_k, top_p))

    tau_sorted = jax.lax.cond(jnp.any(truncating), from_candidates, no_threshold)
    tau = jnp.maximum(tau_sorted, tau_min_p)
    return jnp.where(greedy, -jnp.inf, tau).astype(jnp.float32)


def argmax_of_top(top_vals: jax.Array, top_ids: jax.Array) -> jax.Array:
    """[B] int32 greedy token from a row's top-K list (any order): the lowest id among its largest values."""
    best = jnp.max(top_vals, axis=-1, keepdims=True)
    return jnp.min(jnp.where(top_vals == best, top_ids, jnp.iinfo(jnp.int32).max), axis=-1).astype(jnp.int32)


def finish(
    *,
    token: jax.Array,
    x_tok: jax.Array,
    lse1: jax.Array,
    entropy: jax.Array,
    lse_admitted: jax.Array,
    top_vals: jax.Array,
    top_ids: jax.Array,
    greedy: jax.Array,
    inv_t: jax.Array,
    bad: jax.Array,
    conf_k: int,
    num_top_logprobs: int,
) -> SampleOutput:
    """Assemble SampleOutput from per-row statistics (shared by reference and kernel).

    top_vals/top_ids: [B, >= max(conf_k, N)] T=1 logits, any order, ties holding their lowest ids;
    confidence = lse1 - mean of the finite values among the top conf_k. Ids of -inf entries are unspecified.
    """
    k_all = max(conf_k, num_top_logprobs)
    # descending value, ascending id among equal values (as lax.top_k over the full row orders them)
    neg_vals, ids = jax.lax.sort((-top_vals, top_ids.astype(jnp.int32)), dimension=-1, num_keys=2)
    vals, ids = -neg_vals[:, :k_all], ids[:, :k_all]
    conf_vals = vals[:, :conf_k]
    finite = conf_vals > -jnp.inf
    count = jnp.maximum(jnp.sum(finite, axis=-1), 1).astype(jnp.float32)
    confidence = lse1 - jnp.sum(jnp.where(finite, conf_vals, 0.0), axis=-1) / count
    sample_logprob = jnp.where(greedy, 0.0, x_tok * inv_t - lse_admitted)
    top_lp = vals[:, :num_top_logprobs] - lse1[:, None]
    top_id = ids[:, :num_top_logprobs].astype(jnp.int32)

    def clean(v: jax.Array) -> jax.Array:
        mask = bad.reshape(bad.shape + (1,) * (v.ndim - 1))
        return jnp.where(mask, jnp.zeros_like(v), v)

    return SampleOutput(
        token=clean(token.astype(jnp.int32)),
        logprob=clean(x_tok - lse1),
        sample_logprob=clean(sample_logprob),
        entropy=clean(entropy),
        confidence=clean(confidence),
        top_logprobs=clean(top_lp),
        top_ids=clean(top_id),
        nonfinite=bad,
    )


def tempered_class_sums(x: jax.Array, inv_t: jax.Array, m: jax.Array) -> tuple[jax.Array, jax.Array]:
    """([B, C] class sums of e = exp(d) over `class_view(x)`, [B] w = sum e d), d = x * inv_t - m * inv_t.

    The entropy's sums, in `chunked_class_sums`'s loop. Without truncation the class sums are bitwise the
    draw's class masses (`admitted_class_mass`, the same loop), so the draw needs no pass of its own. d is
    clamped at -200 (exp(-200) is 0 in float32, as exp(-inf) is), so e is unchanged and e * d has no
    0 * -inf NaN on masked logits.
    """
    inv3, mt3 = inv_t[:, None, None], (m * inv_t)[:, None, None]

    def sums(xb: jax.Array) -> tuple[jax.Array, jax.Array]:
        d = jnp.maximum(xb * inv3 - mt3, -200.0)
        e = jnp.exp(d)
        return jnp.sum(e, axis=1), jnp.sum(e * d, axis=(1, 2))

    return chunked_class_sums(class_view(x), sums)


def sample_reference(
    logits: jax.Array,
    key: jax.Array,
    temperature: jax.Array,
    top_k: jax.Array,
    top_p: jax.Array,
    min_p: jax.Array,
    *,
    conf_k: int = 20,
    num_top_logprobs: int = 0,
    row_seed: jax.Array | None = None,
) -> SampleOutput:
    """Sample one token per row of logits [B, V] and return its statistics (module docstring), in plain jnp.

    row_seed [B] uint32, when given, replaces row_seeds(key, B) as each row's noise seed (key unused)."""
    x = logits.astype(jnp.float32)
    batch, _ = x.shape
    greedy, inv_t = inverse_temperature(temperature)
    tau = admission_threshold(x, temperature, top_k, top_p, min_p)
    seeds = row_seeds(key, batch) if row_seed is None else row_seed.astype(jnp.uint32)
    top_vals, top_ids, m1 = top_k_with_max(x, max(conf_k, num_top_logprobs))
    # One row max serves every statistic: the argmax value of greedy rows, m * inv_t the tempered max
    # (inv_t > 0); -inf on all-masked rows, +inf on rows that hold it (XLA:CPU's max need not propagate NaN).
    m = jnp.where(jnp.isfinite(m1), m1, 0.0)

    # tempered log-normaliser and entropy: with e = exp(z - m_t), s = sum e, w = sum e (z - m_t),
    # lse_t = m_t + log s and H = lse_t - sum p z = log s - w / s
    e_class, w_t = tempered_class_sums(x, inv_t, m)
    s_t = jnp.sum(e_class, axis=-1)
    # a NaN logit makes its e (so s_t) NaN, whether or not the max saw it (XLA:CPU's need not)
    bad = ~jnp.isfinite(m1) | jnp.isnan(s_t)
    lse_t = m * inv_t + jnp.log(s_t)
    entropy = jnp.log(s_t) - w_t / s_t
    s_1 = jax.lax.cond(jnp.all(inv_t == 1.0), lambda: s_t,
                       lambda: jnp.sum(jnp.exp(x - m[:, None]), axis=-1))
    lse1 = m + jnp.log(s_1)

    truncating = jnp.any(tau > -jnp.inf)

    def class_mass() -> jax.Array:  # without truncation, the entropy's class sums (bitwise equal)
        return jax.lax.cond(truncating, lambda: admitted_class_mass(x, inv_t, m, tau), lambda: e_class)

    token = choose_tokens(x, greedy, inv_t, tau, m, seeds, argmax_of_top(top_vals, top_ids), class_mass)
    x_tok = jnp.take_along_axis(x, token[:, None], axis=-1)[:, 0]
    # without truncation the admitted set is every finite logit, whose log-normaliser is lse_t
    z = x * inv_t[:, None]
    lse_admitted = jax.lax.cond(
        truncating,
        lambda: jax.nn.logsumexp(jnp.where((x >= tau[:, None]) & (x > -jnp.inf), z, -jnp.inf), axis=-1),
        lambda: lse_t)

    return finish(
        token=token, x_tok=x_tok, lse1=lse1, entropy=entropy, lse_admitted=lse_admitted,
        top_vals=top_vals, top_ids=top_ids, greedy=greedy, inv_t=inv_t, bad=bad,
        conf_k=conf_k, num_top_logprobs=num_top_logprobs,
    )
