"""Timing helpers shared by the benchmark scripts: wall times of repeated calls (best, median) and the fp32
matmul peak measured in the same process, so every benchmark reports MFU against this machine's own peak."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp


def timed_calls(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> tuple[list[float], Any]:
    """(wall seconds of each of `repeats` calls after `warmup` untimed ones, the last result); every
    output is blocked on, so a time covers the device work."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return times, out


def best_seconds(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """(best wall seconds over `repeats` calls of an already warmed-up fn, its last result)."""
    times, out = timed_calls(fn, repeats)
    return min(times), out


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, float]:
    """(best, median) wall seconds of `repeats` calls after `warmup` untimed ones."""
    times, _ = timed_calls(fn, repeats, warmup)
    return min(times), statistics.median(times)


def fp32_matmul_peak(n: int = 1024, repeats: int = 8) -> float:
    """fp32 FLOP/s of a jitted n x n x n dot at full fp32 precision: 2 n^3 / best time (compile excluded)."""
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    dot = jax.jit(lambda x, y: jnp.dot(x, y, precision=jax.lax.Precision.HIGHEST))
    best, _ = time_calls(lambda: dot(a, b), repeats)
    return 2.0 * n**3 / best
