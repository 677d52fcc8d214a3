"""Timing helpers shared by the benchmark scripts: best-of-N wall time and the fp32 matmul peak measured
in the same process, so every benchmark reports MFU against this machine's own peak."""
from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp


def best_seconds(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """(best wall seconds over `repeats` calls of an already warmed-up fn, its last result)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best, out


def fp32_matmul_peak(n: int = 1024, repeats: int = 8) -> float:
    """fp32 FLOP/s of a jitted n x n x n jnp.dot: 2 n^3 / best time."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    jax.block_until_ready(dot(a, b))
    t, _ = best_seconds(lambda: dot(a, b), repeats)
    return 2.0 * n**3 / t
