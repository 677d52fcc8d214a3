"""Benchmark the tracking sampling op against plain jax.random.categorical (reference impl, jitted).

For each vocabulary size: time `sample` (token + logprob + entropy + confidence) and
`jax.random.categorical` on the same [B, V] float32 logits, report their ratio (target <= 1.10), and put
each beside two machine figures measured in the same run: the fp32 matmul peak (jitted 1024^3 jnp.dot,
best of several) and the streaming rate of a jitted row-sum over the same logits (the read floor).
The op's fraction of the memory bound is tracking GB/s over row-sum GB/s (`tracking_fraction_of_read_bound`).
Also timed: the op with top_p = 0.95 on flat logits (full-sort fallback) and on peaked ones (candidates).
Prints a table; with --json prints one JSON object instead.
Part (b), with --engine: the decode engine vs transformers' generate at the same batch (scripts/bench_engine.py,
which also runs on its own); its results go under the "engine" key.
"""
from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from vagent_jax.bench_timing import fp32_matmul_peak, time_calls  # noqa: E402
from vagent_jax.engine import SamplingConfig  # noqa: E402
from vagent_jax.kernels.sampling import sample  # noqa: E402


def bench_vocab(batch: int, vocab: int, repeats: int) -> dict[str, float]:
    """Times (s) and rates for one [batch, vocab] float32 logits array."""
    logits = jax.random.normal(jax.random.key(2), (batch, vocab), jnp.float32) * 2.0
    key = jax.random.key(3)
    plain_rows = SamplingConfig().row_arrays(batch)
    top_p_rows = SamplingConfig(temperature=0.6, top_p=0.95).row_arrays(batch)

    categorical = jax.jit(lambda x, k: jax.random.categorical(k, x, axis=-1))
    tracking = jax.jit(lambda x, k: sample(x, k, *plain_rows))
    tracking_top_p = jax.jit(lambda x, k: sample(x, k, *top_p_rows))
    row_sum = jax.jit(lambda x: jnp.sum(x, axis=-1))

    t_cat = time_calls(lambda: categorical(logits, key), repeats)[0]
    t_track = time_calls(lambda: tracking(logits, key), repeats)[0]
    # top_p = 0.95 at T = 0.6: on these flat logits the nucleus is wider than the 256 candidates, so the
    # pre-pass falls back to a full sort; on peaked (x4) logits it stays on the candidate path
    t_top_p = time_calls(lambda: tracking_top_p(logits, key), max(2, repeats // 4))[0]
    peaked = logits * 4.0
    t_top_p_peaked = time_calls(lambda: tracking_top_p(peaked, key), repeats)[0]
    t_sum = time_calls(lambda: row_sum(logits), repeats)[0]
    nbytes = logits.size * logits.dtype.itemsize
    return {
        "batch": batch, "vocab": vocab,
        "categorical_s": t_cat, "tracking_s": t_track, "tracking_top_p_sort_s": t_top_p,
        "tracking_top_p_candidates_s": t_top_p_peaked, "row_sum_s": t_sum,
        "ratio_tracking_vs_categorical": t_track / t_cat,
        "categorical_gbps": nbytes / t_cat / 1e9, "tracking_gbps": nbytes / t_track / 1e9,
        "row_sum_gbps": nbytes / t_sum / 1e9,
        # the op reads the logits once at best: its rate over the plain row sum's is its fraction of that bound
        "tracking_fraction_of_read_bound": t_sum / t_track,
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; print a table (or one JSON object with --json) and return the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--vocab", type=int, nargs="+", default=[32768, 151936])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--engine", action="store_true", help="also run part (b): scripts/bench_engine.py")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or min(args.vocab) < 1:
        parser.error("--batch, --repeats and every --vocab must be >= 1")

    peak = fp32_matmul_peak(1024, 10)
    rows = [bench_vocab(args.batch, v, args.repeats) for v in args.vocab]
    result = {"backend": jax.default_backend(), "device": str(jax.devices()[0]),
              "matmul_peak_gflops": peak / 1e9, "target_ratio": 1.10, "results": rows}
    if args.engine:
        result["engine"] = _engine_part(args.batch)
    if args.json:
        print(json.dumps(result))
        return result
    print(f"backend {result['backend']}  fp32 matmul peak {peak / 1e9:.1f} GFLOP/s  (logits fp32, B={args.batch})")
    header = ("V", "categorical ms", "tracking ms", "ratio", "top_p sort ms", "top_p cand ms", "row-sum ms",
              "cat GB/s", "track GB/s", "sum GB/s", "of bound")
    print("  ".join(f"{h:>14}" for h in header))
    for r in rows:
        ms = [r[k] * 1e3 for k in ("categorical_s", "tracking_s")]
        ms += [r["ratio_tracking_vs_categorical"]]
        ms += [r[k] * 1e3 for k in ("tracking_top_p_sort_s", "tracking_top_p_candidates_s", "row_sum_s")]
        cells = (r["vocab"], *ms, r["categorical_gbps"], r["tracking_gbps"], r["row_sum_gbps"],
                 r["tracking_fraction_of_read_bound"])
        print("  ".join(f"{c:>14}" if isinstance(c, int) else f"{c:>14.3f}" for c in cells))
    if args.engine:
        import bench_engine  # scripts/ is on sys.path (see _engine_part)

        print()
        bench_engine.print_table(result["engine"])
    return result


def _engine_part(batch: int) -> dict:
    """Part (b): run scripts/bench_engine.py's benchmark (engine vs transformers) at this batch."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_engine

    return bench_engine.run_engine_benchmark(batch=batch)


if __name__ == "__main__":
    main()
