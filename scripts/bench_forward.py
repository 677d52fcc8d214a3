"""Benchmark the policy forward on CPU: training-shape forward, KV-cache prefill and one-token decode.

For each preset (PRESETS in vagent_jax/models/config.py) it times three jitted functions, each compiled
once, warmed up, then run several times with block_until_ready (best and median are kept):
  forward  forward(params, tokens [B,T], positions [B,T]) without a cache (the SFT / log-prob shape);
  prefill  the same T tokens written into a zeroed KV cache of length ctx = T (cache donated);
  decode   one token per row at position ctx-1 of a full cache of length ctx (cache donated and fed back).
The fp32 matmul peak is measured in the same process (jitted jnp.dot of two n x n fp32 matrices,
FLOPs = 2 n^3, best of several; sampled before, between and after the presets, the best is the peak),
and MFU = achieved model FLOP/s / peak.

Model FLOPs (useful work, not what the masked implementation executes):
  dense      2 * N per token, N = ModelConfig.num_non_embedding_params (all matmul weights incl. lm head;
             the embedding gather is free);
  attention  4 * L * H * hd per (query, attended key) pair: 2*H*hd for q.k^T plus 2*H*hd for probs.v,
             summed over layers. A causal sequence of T tokens has T(T+1)/2 pairs; a decode query at
             position p attends p+1 keys (here p = ctx-1, so ctx keys).
The forward computes full [T, S] masked scores, so for forward/prefill it executes about twice the
attention FLOPs counted here. Counted attention is ~7% (4m) / ~1% (100m) of forward FLOPs at the
default shapes and ~13% / ~4% of decode FLOPs.

Usage: python scripts/bench_forward.py [--configs 4m,100m] [--quick] [--json]
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from vagent_jax.bench_timing import fp32_matmul_peak, time_calls  # noqa: E402
from vagent_jax.models.config import PRESETS, ModelConfig  # noqa: E402
from vagent_jax.models.transformer import forward, init_cache  # noqa: E402
from vagent_jax.testing import random_params  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Shapes:
    """Benchmark shapes for one preset: forward/prefill batch x seq, decode batch and cache length."""

    fwd_batch: int
    fwd_seq: int
    dec_batch: int
    dec_ctx: int
    reps: int


DEFAULT_SHAPES = {
    "4m": Shapes(fwd_batch=8, fwd_seq=256, dec_batch=64, dec_ctx=256, reps=7),
    "100m": Shapes(fwd_batch=4, fwd_seq=128, dec_batch=16, dec_ctx=256, reps=5),
}
QUICK_SHAPES = {
    "4m": Shapes(fwd_batch=2, fwd_seq=32, dec_batch=4, dec_ctx=32, reps=2),
    "100m": Shapes(fwd_batch=1, fwd_seq=16, dec_batch=2, dec_ctx=16, reps=2),
}
DECODE_STEPS = 8  # decode calls per timed repetition (the cache is fed back between calls)


@dataclasses.dataclass(frozen=True)
class Row:
    """One measured phase: shape, best/median seconds per call, tokens/s and MFU at the best time."""

    config: str
    phase: str
    batch: int
    seq: int
    ctx: int
    best_s: float
    median_s: float
    tokens_per_s: float
    flops_per_call: float
    gflops_per_s: float

    def mfu(self, peak_flops: float) -> float:
        """Model FLOP utilisation: achieved model FLOP/s at the best time / peak FLOP/s."""
        return self.gflops_per_s * 1e9 / peak_flops


def dense_flops(cfg: ModelConfig, tokens: int) -> float:
    """2 * N * tokens, N = parameters excluding the embedding gather."""
    return 2.0 * cfg.num_non_embedding_params * tokens


def attention_flops(cfg: ModelConfig, pairs: int) -> float:
    """4 * L * H * hd FLOPs per (query, key) pair: 2*H*hd for q.k^T plus 2*H*hd for probs.v, per layer."""
    return 4.0 * cfg.n_layers * cfg.n_heads * cfg.head_dim * pairs


def causal_pairs(batch: int, seq: int) -> int:
    """(query, key) pairs of `batch` causal sequences of length `seq`: batch * seq(seq+1)/2."""
    return batch * seq * (seq + 1) // 2


def _row(cfg_name: str, phase: str, batch: int, seq: int, ctx: int, times: tuple[float, float],
         tokens: int, flops: float) -> Row:
    best, median = times
    return Row(config=cfg_name, phase=phase, batch=batch, seq=seq, ctx=ctx, best_s=best, median_s=median,
               tokens_per_s=tokens / best, flops_per_call=flops, gflops_per_s=flops / best / 1e9)


def bench_preset(name: str, cfg: ModelConfig, shapes: Shapes) -> list[Row]:
    """Time forward, prefill and decode for one config; returns one Row per phase."""
    params = random_params(cfg, seed=0)
    B, T = shapes.fwd_batch, shapes.fwd_seq
    if T > cfg.max_seq_len or shapes.dec_ctx > cfg.max_seq_len:
        raise ValueError(f"config {name!r}: benchmark length exceeds max_seq_len={cfg.max_seq_len}")
    tokens = jax.random.randint(jax.random.key(1), (B, T), 0, cfg.vocab_size, jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    rows = []

    fwd = jax.jit(functools.partial(forward, cfg=cfg))
    flops = dense_flops(cfg, B * T) + attention_flops(cfg, causal_pairs(B, T))
    times = time_calls(lambda: fwd(params, tokens, positions)[0], shapes.reps)
    rows.append(_row(name, "forward", B, T, T, times, B * T, flops))

    def cached_fn(p, tok, pos, cache):
        return forward(p, tok, pos, None, cache, cfg=cfg)

    cached = jax.jit(cached_fn, donate_argnums=(3,))  # prefill and decode: same function, two shapes
    state = {"cache": init_cache(cfg, B, T)}

    def prefill_call() -> Any:
        logits, state["cache"] = cached(params, tokens, positions, state["cache"])
        return logits

    times = time_calls(prefill_call, shapes.reps)
    rows.append(_row(name, "prefill", B, T, T, times, B * T, flops))
    del state

    Bd, S = shapes.dec_batch, shapes.dec_ctx
    dec_tok = jax.random.randint(jax.random.key(2), (Bd, 1), 0, cfg.vocab_size, jnp.int32)
    dec_pos = jnp.full((Bd, 1), S - 1, jnp.int32)
    dstate = {"cache": init_cache(cfg, Bd, S)}

    def decode_call() -> Any:
        logits = None
        for _ in range(DECODE_STEPS):
            logits, dstate["cache"] = cached(params, dec_tok, dec_pos, dstate["cache"])
        return logits

    best, median = time_calls(decode_call, shapes.reps)
    times = (best / DECODE_STEPS, median / DECODE_STEPS)
    flops = dense_flops(cfg, Bd) + attention_flops(cfg, Bd * S)
    rows.append(_row(name, "decode", Bd, 1, S, times, Bd, flops))
    return rows


def format_table(rows: list[Row], peaks: list[float], peak_n: int, num_params: dict[str, int]) -> str:
    """Human-readable table of the rows, headed by the measured matmul peak (best of the samples)."""
    peak = max(peaks)
    samples = ", ".join(f"{p / 1e9:.1f}" for p in peaks)
    lines = [f"device: {jax.devices()[0].device_kind} ({os.cpu_count()} cpus), jax {jax.__version__}",
             f"fp32 matmul peak (jnp.dot {peak_n}x{peak_n}): {peak / 1e9:.1f} GFLOP/s (samples: {samples})",
             "model FLOPs: 2*N_non_embedding per token + 4*L*H*hd per causal (query, key) pair; "
             "decode at position ctx-1"]
    head = f"{'config':<7}{'params':>8} {'phase':<8}{'batch':>6}{'seq':>6}{'ctx':>6}" \
           f"{'ms/call':>10}{'tokens/s':>11}{'GFLOP/s':>9}{'MFU':>7}"
    lines += [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.config:<7}{num_params[r.config] / 1e6:>7.1f}M {r.phase:<8}{r.batch:>6}{r.seq:>6}"
                     f"{r.ctx:>6}{r.best_s * 1e3:>10.2f}{r.tokens_per_s:>11.0f}{r.gflops_per_s:>9.1f}"
                     f"{r.mfu(peak):>7.1%}")
    return "\n".join(lines)


def parse_configs(text: str) -> list[str]:
    """Comma-separated preset names; an unknown name stops naming --configs."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("--configs: no preset named")
    for n in names:
        if n not in PRESETS:
            raise ValueError(f"--configs: unknown preset {n!r} (known: {', '.join(PRESETS)})")
        if n not in DEFAULT_SHAPES:
            raise ValueError(f"--configs: preset {n!r} has no benchmark shapes")
    return names


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table, or one JSON object with --json."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="4m,100m", help="comma-separated PRESETS names (default 4m,100m)")
    ap.add_argument("--quick", action="store_true", help="tiny shapes and a small peak matmul (for tests)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)
    try:
        names = parse_configs(args.configs)
    except ValueError as e:
        ap.error(str(e))
    shapes = QUICK_SHAPES if args.quick else DEFAULT_SHAPES
    peak_n, peak_reps = (512, 5) if args.quick else (2048, 5)

    # The machine is shared: sample the peak before, between and after the presets and keep the best.
    peaks = [fp32_matmul_peak(peak_n, peak_reps)]
    rows: list[Row] = []
    for name in names:
        rows += bench_preset(name, PRESETS[name], shapes[name])
        peaks.append(fp32_matmul_peak(peak_n, peak_reps))
    peak = max(peaks)
    num_params = {n: PRESETS[n].num_params for n in names}

    if args.json:
        out = {
            "device": jax.devices()[0].device_kind, "cpus": os.cpu_count(), "jax": jax.__version__,
            "peak_flops": peak, "peak_gflops": peak / 1e9, "peak_matmul_n": peak_n,
            "peak_gflops_samples": [p / 1e9 for p in peaks],
            "num_params": num_params,
            "rows": [dataclasses.asdict(r) | {"mfu": r.mfu(peak)} for r in rows],
        }
        print(json.dumps(out))
    else:
        print(format_table(rows, peaks, peak_n, num_params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
