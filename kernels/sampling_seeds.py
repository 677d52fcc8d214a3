"""Counter-based per-row seeds of the fused sampling op: a uint32 hash per row (from a PRNG key, or from
(stream, request, position) so a request's draws do not depend on its slot). The draw turns a row's seed
into its one uniform (`sampling_draw.row_uniform`)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_GOLDEN = np.uint32(0x9E3779B9)
_M1 = np.uint32(0x85EBCA6B)
_M2 = np.uint32(0xC2B2AE35)
_ROW_SALT = np.uint32(0x632BE5AB)


def fmix32(h: jax.Array) -> jax.Array:
    """MurmurHash3 32-bit finaliser on uint32 arrays: a bijection with full avalanche."""
    h = h ^ (h >> np.uint32(16))
    h = h * _M1
    h = h ^ (h >> np.uint32(13))
    h = h * _M2
    return h ^ (h >> np.uint32(16))


def row_seeds(key: jax.Array, num_rows: int) -> jax.Array:
    """[num_rows] uint32 per-row seeds from a PRNG key: fmix32(fmix32(row + salt) ^ seed).

    Rows are numbered locally; a caller that shards rows across devices must fold the shard index into
    `key` first, or rows on different shards would share noise.
    """
    seed = jax.random.bits(key, (), jnp.uint32)
    rows = jnp.arange(num_rows, dtype=jnp.uint32)
    return fmix32(fmix32(rows + _ROW_SALT) ^ seed)


def position_seeds(stream_seed: jax.Array, request_seed: jax.Array, position: jax.Array) -> jax.Array:
    """[B] uint32 row seeds that depend only on (stream, request, position), not on the row's slot:
    fmix32(fmix32(fmix32(stream ^ salt) + request * golden) ^ position). A decode engine passes them as
    `row_seed` so a request samples the same tokens whichever slot, batch or engine call decodes it.
    stream_seed: uint32 scalar; request_seed: [B] uint32; position: [B] integer (the sampled token's position).
    """
    s = fmix32(jnp.asarray(stream_seed, jnp.uint32) ^ _ROW_SALT)
    h = fmix32(s + jnp.asarray(request_seed, jnp.uint32) * _GOLDEN)
    return fmix32(h ^ jnp.asarray(position).astype(jnp.uint32))

