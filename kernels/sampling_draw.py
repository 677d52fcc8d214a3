"""The token draw of the fused sampling op: inverse CDF with one uniform per row, no per-logit noise.

Per sampling row, the weights are w_v = exp(x_v / T - max x / T) on the admitted set (x_v >= tau, x_v > -inf),
the same terms the entropy pass exponentiates; the token is the first v, in a fixed order, whose running
sum of weights exceeds u * sum w, for one uniform u in [0, 1) per row. That samples q = w / sum w exactly
(up to float32 rounding of the sums) and costs one exp per logit plus O(1) transcendentals per row, where
a Gumbel-max race spent a hash, a log and a log1p on every logit.

The order is class-major: the (padded) row is viewed as [n, C] (C = NUM_CLASSES columns; class c holds
columns c, C + c, 2C + c, ...). One pass sums the weights per class (a column reduction, which XLA:CPU
vectorises well); a cumulative sum over the C class totals picks the class, and a cumulative sum over
that class's n weights (recomputed from a gather of n logits) picks the token. Neither step needs a
cumulative sum over the whole row.

The reference and the Pallas path both call `draw_tokens` on the same inputs (the logits, the threshold
tau and the exact row max), so their tokens are identical by construction.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vagent_jax.kernels.sampling_seeds import fmix32

NUM_CLASSES = 128  # columns per class row; a row of V logits is viewed as [ceil(V / C), C]
CHUNK_ROWS = 64  # class-view rows per step of the chunked passes: [B, 64, 128] f32 = 2 MiB at B = 64
_DRAW_SALT = np.uint32(0x5BD1E995)


def row_uniform(seed: jax.Array) -> jax.Array:
    """[B] float32 uniforms in [0, 1) on a 2^-24 grid, one per row seed: (fmix32(seed ^ salt) >> 8) * 2^-24.

    Strictly below 1, so u * total < total before rounding (the draw still guards the rounding)."""
    h = fmix32(jnp.asarray(seed, jnp.uint32) ^ _DRAW_SALT)
    return (h >> np.uint32(8)).astype(jnp.float32) * np.float32(2.0**-24)


def class_view(x: jax.Array, classes: int = NUM_CLASSES) -> jax.Array:
    """x [B, V] as [B, n, C] with column i * C + c at [:, i, c]; pads the row with -inf up to n * C."""
    batch, vocab = x.shape
    pad = -vocab % classes
    if pad:
        x = jnp.pad(x, ((0, 0), (0, pad)), constant_values=-jnp.inf)
    return x.reshape(batch, -1, classes)


def _weights(x: jax.Array, inv_t: jax.Array, mt: jax.Array, tau: jax.Array) -> jax.Array:
    """exp(x * inv_t - mt) where x is admitted (x >= tau, x > -inf), else 0; per-row arrays broadcast."""
    return jnp.where((x >= tau) & (x > -jnp.inf), jnp.exp(x * inv_t - mt), 0.0)


def _first_exceeding(cum: jax.Array, target: jax.Array, weights: jax.Array) -> jax.Array:
    """[B] index of the first cum > target; where rounding leaves none, the last index with weight > 0."""
    n = cum.shape[-1]
    first = jnp.sum((cum <= target[:, None]).astype(jnp.int32), axis=-1)
    last_live = n - 1 - jnp.argmax(weights[:, ::-1] > 0.0, axis=-1).astype(jnp.int32)
    return jnp.minimum(first, last_live)


def chunked_class_sums(xc: jax.Array, per_chunk: Callable[[jax.Array], tuple[jax.Array, ...]],
                       ) -> tuple[jax.Array, ...]:
    """Sum per_chunk(block) over blocks of CHUNK_ROWS rows of the class view xc [B, n, C], in order.

    A loop over chunks keeps the [B, rows, C] intermediates (d, exp(d)) in cache: XLA:CPU writes each
    elementwise result out before a reduction reads it, and over a whole [B, V] row at V = 152k those
    arrays (39 MB each) took ~10x longer than this loop. The last n % CHUNK_ROWS rows are added last.
    Every caller with the same xc shape sums in the same order, so equal terms give bitwise equal sums."""
    n = xc.shape[1]
    steps, tail = divmod(n, CHUNK_ROWS)
    if steps == 0:
        return per_chunk(xc)

    def body(i, acc):
        block = jax.lax.dynamic_slice_in_dim(xc, i * CHUNK_ROWS, CHUNK_ROWS, axis=1)
        return tuple(a + b for a, b in zip(acc, per_chunk(block)))

    shapes = jax.eval_shape(per_chunk, jax.ShapeDtypeStruct(xc[:, :CHUNK_ROWS].shape, xc.dtype))
    acc = jax.lax.fori_loop(0, steps, body, tuple(jnp.zeros(a.shape, a.dtype) for a in shapes))
    if tail:
        acc = tuple(a + b for a, b in zip(acc, per_chunk(xc[:, steps * CHUNK_ROWS:])))
    return acc


def admitted_class_mass(x: jax.Array, inv_t: jax.Array, m: jax.Array, tau: jax.Array) -> jax.Array:
    """[B, C] sums over each class of the admitted weights exp(x * inv_t - m * inv_t) (one pass over x).

    Without truncation (tau = -inf) these are bitwise the class sums of exp(x * inv_t - m * inv_t) over
    `class_view(x)` (exp(-inf) = 0 either way), which the reference's entropy pass already computes."""
    inv3, mt3, tau3 = inv_t[:, None, None], (m * inv_t)[:, None, None], tau[:, None, None]
    (mass,) = chunked_class_sums(class_view(x), lambda xb: (jnp.sum(_weights(xb, inv3, mt3, tau3), axis=1),))
    return mass


def draw_tokens(
    x: jax.Array, inv_t: jax.Array, tau: jax.Array, m: jax.Array, u: jax.Array, fallback: jax.Array,
    class_mass: jax.Array | None = None,
) -> jax.Array:
    """[B] int32 tokens drawn from q ∝ exp(x * inv_t) on the admitted set, by inverse CDF (module docstring).

    x [B, V] f32 logits; inv_t, tau [B] (tau = -inf: no truncation); m [B] the row max of x (finite, or any
    finite stand-in on rows the caller discards); u [B] uniforms in [0, 1); fallback [B] the token of a row
    whose chosen class turns out weightless under rounding (the argmax, which every truncation admits).
    class_mass [B, C]: `admitted_class_mass(x, inv_t, m, tau)` when the caller has it, else computed here.
    """
    xc = class_view(x)
    _, _, classes = xc.shape
    if class_mass is None:
        class_mass = admitted_class_mass(x, inv_t, m, tau)
    cum = jnp.cumsum(class_mass, axis=-1)
    target = u * cum[:, -1]
    c = _first_exceeding(cum, target, class_mass)
    before = jnp.where(c > 0, jnp.take_along_axis(cum, jnp.maximum(c - 1, 0)[:, None], axis=-1)[:, 0], 0.0)
    members = jnp.take_along_axis(xc, c[:, None, None], axis=2)[:, :, 0]  # [B, n]: columns i * C + c
    w = _weights(members, inv_t[:, None], (m * inv_t)[:, None], tau[:, None])
    i = _first_exceeding(jnp.cumsum(w, axis=-1), target - before, w)
    token = i * classes + c
    ok = jnp.any(w > 0.0, axis=-1) & (token < x.shape[1])
    return jnp.where(ok, token, fallback).astype(jnp.int32)


def choose_tokens(
    x: jax.Array, greedy: jax.Array, inv_t: jax.Array, tau: jax.Array, m: jax.Array, seeds: jax.Array,
    argmax: jax.Array, class_mass: Callable[[], jax.Array] | None = None,
) -> jax.Array:
    """[B] int32 tokens: argmax on greedy rows, `draw_tokens` with `row_uniform(seeds)` on the others.
    An all-greedy batch skips the draw; class_mass, when given, returns the draw's [B, C] class sums."""
    def draw() -> jax.Array:
        mass = None if class_mass is None else class_mass()
        return jnp.where(greedy, argmax, draw_tokens(x, inv_t, tau, m, row_uniform(seeds), argmax, mass))

    return jax.lax.cond(jnp.all(greedy), lambda: argmax, draw)
