"""The decode engine's validated settings: how rows are sampled (`SamplingConfig`, YAML key `sampling`) and
the engine's shapes and stopping rules (`EngineConfig`, YAML key `engine`). The sampling kernel never sees
these: the engine turns them into per-row arrays once, when it is built.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp

from vagent_jax.config import config_scope, require


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings shared by every row of a request: T (0 = greedy), top_k (0 = off),
    top_p (1 = off), min_p (0 = off), conf_k (DeepConf's k)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    conf_k: int = 20

    def validate(self, vocab_size: int | None = None) -> None:
        """Reject out-of-range values naming the key; the vocab-dependent checks run when V is given."""
        require(self.temperature >= 0.0, "temperature", f"must be >= 0 (0 = greedy), got {self.temperature}")
        require(0.0 < self.top_p <= 1.0, "top_p", f"must be in (0, 1] (1 = off), got {self.top_p}")
        require(self.top_k >= 0, "top_k", f"must be >= 0 (0 = off), got {self.top_k}")
        require(0.0 <= self.min_p < 1.0, "min_p", f"must be in [0, 1) (0 = off), got {self.min_p}")
        require(self.conf_k >= 1, "conf_k", f"must be >= 1, got {self.conf_k}")
        if vocab_size is not None:
            require(vocab_size >= 1, "vocab_size", f"must be >= 1, got {vocab_size}")
            require(self.top_k <= vocab_size, "top_k", f"{self.top_k} exceeds the vocabulary size {vocab_size}")

    def row_arrays(self, batch: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """(temperature f32, top_k i32, top_p f32, min_p f32), each [batch], for `sample`."""
        return (
            jnp.full((batch,), self.temperature, jnp.float32),
            jnp.full((batch,), self.top_k, jnp.int32),
            jnp.full((batch,), self.top_p, jnp.float32),
            jnp.full((batch,), self.min_p, jnp.float32),
        )


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """Decode engine shape and stopping rules."""

    batch_slots: int = 64
    max_len: int = 512  # cache positions per slot: prompt + every turn + observations
    max_new_tokens: int = 256  # per assistant turn
    chunk_steps: int = 16  # decode steps per jitted chunk (host sees finished turns between chunks)
    min_prefill_bucket: int = 16
    min_prefill_rows: int = 8  # smallest row bucket of a prefill: fewer programs to compile, little waste
    # Largest rows x tokens of one prefill call (0: batch_slots x max_len); a longer admission batch is
    # prefilled in several calls of fewer rows, so prefill memory stays bounded (rows x tokens x max_len).
    max_prefill_tokens: int = 0
    min_kv_bucket: int = 64  # smallest attention length of a decode chunk (buckets are powers of two)
    sampling: SamplingConfig = SamplingConfig()
    impl: Literal["reference", "pallas"] = "reference"
    deepconf_window: int = 64  # tokens in DeepConf's sliding window (paper: 2048)
    cache_dtype: Literal["auto", "float32", "bfloat16"] = "auto"

    def validate(self, vocab_size: int | None = None) -> None:
        """Reject impossible shapes, naming the key."""
        require(self.batch_slots >= 1, "batch_slots", f"must be >= 1, got {self.batch_slots}")
        require(self.max_len >= 2, "max_len", f"must be >= 2, got {self.max_len}")
        require(1 <= self.max_new_tokens < self.max_len, "max_new_tokens",
                f"must be in [1, max_len={self.max_len}), got {self.max_new_tokens}")
        require(self.chunk_steps >= 1, "chunk_steps", f"must be >= 1, got {self.chunk_steps}")
        require(self.min_prefill_bucket >= 1, "min_prefill_bucket", f"must be >= 1, got {self.min_prefill_bucket}")
        require(self.min_prefill_rows >= 1, "min_prefill_rows", f"must be >= 1, got {self.min_prefill_rows}")
        require(self.max_prefill_tokens >= 0, "max_prefill_tokens",
                f"must be >= 0 (0: no limit), got {self.max_prefill_tokens}")
        require(self.min_kv_bucket >= 1, "min_kv_bucket", f"must be >= 1, got {self.min_kv_bucket}")
        require(self.deepconf_window >= 1, "deepconf_window", f"must be >= 1, got {self.deepconf_window}")
        require(self.impl in ("reference", "pallas"), "impl", f"must be 'reference' or 'pallas', got {self.impl!r}")
        require(self.cache_dtype in ("auto", "float32", "bfloat16"), "cache_dtype",
                f"must be 'auto', 'float32' or 'bfloat16', got {self.cache_dtype!r}")
        with config_scope("sampling"):
            self.sampling.validate(vocab_size)

    def prefill_rows_cap(self, tokens: int) -> int:
        """Most rows one prefill of `tokens`-token bucket holds: batch_slots, or the largest power of two
        within max_prefill_tokens (at least 1)."""
        if not self.max_prefill_tokens:
            return self.batch_slots
        fit = max(1, self.max_prefill_tokens // tokens)
        return min(self.batch_slots, 1 << (fit.bit_length() - 1))
