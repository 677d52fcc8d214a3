"""Public fused sampling op: one token per row plus the statistics RL and DeepConf need, in one call.

`sample(logits, key, temperature, top_k, top_p, min_p)` returns a SampleOutput (token, T=1 logprob,
sampling logprob, pre-truncation entropy, DeepConf confidence, optional top logprobs, nonfinite flag);
semantics are spelled out in `sampling_reference`. Two implementations with one contract:
  impl="reference"  pure jnp (default; what CPU runs),
  impl="pallas"     one pass over vocabulary tiles (`sampling_pallas`); interpret mode on CPU,
                    Mosaic on TPU (not GPU). Tokens are identical to the reference for the same key.
Per-row arrays let one batch mix greedy, plain and truncated rows. The kernel takes arrays only: the
user-facing settings (YAML key `sampling`) are `vagent_jax.engine.config.SamplingConfig`, which the engine
turns into those arrays (`SamplingConfig.row_arrays`).
"""
from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from vagent_jax.kernels.sampling_pallas import sample_pallas
from vagent_jax.kernels.sampling_reference import SampleOutput, sample_reference

__all__ = ["SampleOutput", "sample"]

Impl = Literal["reference", "pallas"]


_sample_reference_jit = jax.jit(sample_reference, static_argnames=("conf_k", "num_top_logprobs"))


def _check_inputs(logits, temperature, top_k, top_p, min_p, conf_k: int, num_top_logprobs: int,
                  row_seed=None) -> None:
    """Static shape/dtype checks that name the tensor or argument at fault."""
    if logits.ndim != 2:
        raise ValueError(f"sample: logits must be [B, V], got shape {logits.shape}")
    if logits.dtype not in (jnp.float32, jnp.bfloat16):
        raise ValueError(f"sample: logits must be float32 or bfloat16, got {logits.dtype}")
    batch, vocab = logits.shape
    for name, arr, kind in (("temperature", temperature, "f"), ("top_k", top_k, "i"),
                            ("top_p", top_p, "f"), ("min_p", min_p, "f")):
        if arr.shape != (batch,):
            raise ValueError(f"sample: {name} must have shape [B]=({batch},), got {arr.shape}")
        if jnp.dtype(arr.dtype).kind != kind:
            want = "an integer" if kind == "i" else "a float"
            raise ValueError(f"sample: {name} must have {want} dtype, got {arr.dtype}")
    if row_seed is not None:
        if row_seed.shape != (batch,):
            raise ValueError(f"sample: row_seed must have shape [B]=({batch},), got {row_seed.shape}")
        if jnp.dtype(row_seed.dtype).kind not in ("u", "i"):
            raise ValueError(f"sample: row_seed must have an integer dtype, got {row_seed.dtype}")
    if conf_k < 1:
        raise ValueError(f"sample: conf_k={conf_k} must be >= 1")
    if not 0 <= num_top_logprobs <= vocab:
        raise ValueError(f"sample: num_top_logprobs={num_top_logprobs} must be in [0, V={vocab}]")


def sample(
    logits: jax.Array,
    key: jax.Array,
    temperature: jax.Array,
    top_k: jax.Array,
    top_p: jax.Array,
    min_p: jax.Array,
    *,
    conf_k: int = 20,
    num_top_logprobs: int = 0,
    impl: Impl = "reference",
    interpret: bool | None = None,
    row_seed: jax.Array | None = None,
) -> SampleOutput:
    """Sample a token per row of logits [B, V] (bf16 or f32) with per-row T / top_k / top_p / min_p [B].

    T == 0 is greedy; confidence uses k = min(conf_k, V). Values of the per-row arrays are not checked
    here (they may be traced): build them from a validated engine SamplingConfig. interpret=None runs the
    Pallas kernel interpreted on CPU only.
    Under shard_map over rows, fold the shard index into `key` (row seeds are per local row).
    row_seed [B] (uint32, e.g. sampling_reference.position_seeds) replaces the key's per-row seeds, so a
    row's noise no longer depends on its row index; None keeps the key-based seeds.
    """
    _check_inputs(logits, temperature, top_k, top_p, min_p, conf_k, num_top_logprobs, row_seed)
    conf_k = min(conf_k, logits.shape[1])  # DeepConf over all tokens when V < conf_k
    if impl == "reference":
        return _sample_reference_jit(
            logits, key, temperature, top_k, top_p, min_p, conf_k=conf_k, num_top_logprobs=num_top_logprobs,
            row_seed=row_seed)
    if impl == "pallas":
        if interpret is None:
            interpret = jax.default_backend() == "cpu"
        if not interpret and jax.default_backend() != "tpu":
            raise ValueError(f"sample: impl='pallas' compiles for TPU only (backend is "
                             f"{jax.default_backend()!r}); use impl='reference' or interpret=True")
        return sample_pallas(
            logits, key, temperature, top_k, top_p, min_p,
            conf_k=conf_k, num_top_logprobs=num_top_logprobs, interpret=interpret, row_seed=row_seed)
    raise ValueError(f"sample: impl={impl!r} is not one of 'reference', 'pallas'")
