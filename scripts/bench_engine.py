"""Benchmark the decode engine against transformers' generate on the same weights (greedy, same token count).

Policy: a ModelConfig preset (default PRESETS["4m"]) with random weights, written with save_hf_checkpoint and
loaded by transformers' AutoModelForCausalLM (torch, CPU, fp32). Both decode the same B random prompts of
P tokens greedily for exactly G new tokens (engine: no stop tokens, max_new_tokens = G; transformers:
min_new_tokens = max_new_tokens = G, no EOS). Each side is warmed up once (the engine's compiles happen
there), then timed end to end (prefill included) several times; the best run counts.
  tokens/s   B * G / seconds;  ratio = engine tokens/s / transformers tokens/s (goal >= 5).
  MFU        2 * N FLOPs per generated token (N = ModelConfig.num_non_embedding_params: every matmul
             weight, lm head included; attention over the cache not counted) / the fp32 matmul peak
             measured in this run (jitted n x n x n jnp.dot, 2 n^3 FLOPs, best of several).
  agreement  fraction of generated tokens on which the two greedy outputs agree (random weights give
             near-flat logits, so near-ties can diverge a row after its first difference).
  bounds     peak_bound: tokens/s if every decode matmul ran at the measured peak (peak / flops_per_token).
             shape_bound: tokens/s at these shapes = B / (t_mm + t_att), t_mm the best time of one decode
             step's matmuls alone at batch B (jitted chain of the real weights, lm head included), t_att the
             attention's K/V bytes per step (2 L B (P + G/2) Hkv hd 4, mean live length) at the measured
             read bandwidth (jitted sum over 256 MiB). bound_ratio = shape_bound / transformers tokens/s:
             where the 5x goal is above it, the goal is above the physical bound at these shapes.
Prints a table; with --json prints one JSON object.

Usage: python scripts/bench_engine.py [--preset 4m] [--batch 64] [--prompt-len 32] [--new-tokens 128] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vagent_jax.bench_timing import best_seconds, fp32_matmul_peak  # noqa: E402
from vagent_jax.engine import DecodeEngine, EngineConfig, SamplingConfig  # noqa: E402
from vagent_jax.models.config import PRESETS  # noqa: E402
from vagent_jax.models.hf_io import save_hf_checkpoint  # noqa: E402
from vagent_jax.models.transformer import init_params  # noqa: E402


def read_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """Bytes/s of a jitted sum over a float32 array of `mib` MiB (streams it from memory once)."""
    x = jnp.ones((mib * 2**18,), jnp.float32)
    f = jax.jit(jnp.sum)
    jax.block_until_ready(f(x))
    t, _ = best_seconds(lambda: jax.block_until_ready(f(x)), repeats)
    return x.size * 4 / t


def decode_matmul_seconds(params: Any, cfg: Any, batch: int, repeats: int = 20) -> float:
    """Best time of one decode step's matmuls alone at `batch` rows: q, k, v, o, gate, up, down per layer and
    the lm head, chained so each depends on the last (the lower bound of any decode step at these shapes)."""
    layers = [jax.tree.map(lambda a, i=i: a[i], params["layers"]) for i in range(cfg.n_layers)]
    D = cfg.d_model

    def step(layers: Any, emb: jax.Array, x: jax.Array) -> jax.Array:
        for lp in layers:
            qkv = [x @ lp[w].reshape(D, -1) for w in ("wq", "wk", "wv")]
            x = x + qkv[0] @ lp["wo"].reshape(-1, D) + 1e-3 * (qkv[1].sum() + qkv[2].sum())
            x = x + (jax.nn.silu(x @ lp["w_gate"]) * (x @ lp["w_up"])) @ lp["w_down"]
        return x @ emb.T

    f = jax.jit(step)
    x = jnp.ones((batch, D), jnp.float32)
    jax.block_until_ready(f(layers, params["embed"], x))
    t, _ = best_seconds(lambda: jax.block_until_ready(f(layers, params["embed"], x)), repeats)
    return t


def bench_engine(params: Any, cfg: Any, prompts: np.ndarray, new_tokens: int, chunk_steps: int,
                 repeats: int) -> tuple[float, np.ndarray, int]:
    """(best seconds, generated tokens [B, G], compiled programs) for DecodeEngine.generate, greedy."""
    B, P = prompts.shape
    ecfg = EngineConfig(batch_slots=B, max_len=P + new_tokens + 1, max_new_tokens=new_tokens,
                        chunk_steps=chunk_steps, min_prefill_bucket=P, sampling=SamplingConfig(temperature=0.0))
    engine = DecodeEngine(params, cfg, ecfg, stop_token_ids=())
    rows = prompts.tolist()
    engine.generate(rows)  # warm-up: compiles the prefill bucket and the decode chunk
    t, trajs = best_seconds(lambda: engine.generate(rows), repeats)
    if any(tr.reason != "max_new_tokens" or tr.num_generated != new_tokens for tr in trajs):
        raise RuntimeError("engine: a row did not generate exactly --new-tokens tokens")
    return t, np.stack([tr.tokens[P:] for tr in trajs]), engine.compiled_programs


def bench_transformers(ckpt: str, prompts: np.ndarray, new_tokens: int, repeats: int) -> tuple[float, np.ndarray]:
    """(best seconds, generated tokens [B, G]) for transformers' greedy generate on torch CPU fp32."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    ids = torch.tensor(prompts, dtype=torch.long)
    kw = dict(attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
              min_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0)

    def run() -> Any:
        with torch.inference_mode():
            return model.generate(ids, **kw)

    run()  # warm-up
    t, out = best_seconds(run, repeats)
    gen = out[:, prompts.shape[1]:].numpy()
    if gen.shape != (prompts.shape[0], new_tokens):
        raise RuntimeError(f"transformers: generated shape {gen.shape}, expected {(prompts.shape[0], new_tokens)}")
    return t, gen


def run_engine_benchmark(preset: str = "4m", batch: int = 64, prompt_len: int = 32, new_tokens: int = 128,
                         chunk_steps: int = 32, repeats: int = 3, with_transformers: bool = True) -> dict:
    """Measure both generators and the matmul peak in this process; return the result dict."""
    import torch

    cfg = PRESETS[preset]
    params = jax.jit(init_params, static_argnums=0)(cfg, jax.random.key(0))
    prompts = np.random.default_rng(0).integers(0, cfg.vocab_size, (batch, prompt_len))
    flops_per_token = 2.0 * cfg.num_non_embedding_params
    peak = fp32_matmul_peak()
    t_mm = decode_matmul_seconds(params, cfg, batch)
    bandwidth = read_bandwidth()
    att_bytes = 2 * cfg.n_layers * batch * (prompt_len + new_tokens / 2) * cfg.n_kv_heads * cfg.head_dim * 4
    shape_bound = batch / (t_mm + att_bytes / bandwidth)
    t_eng, gen_eng, programs = bench_engine(params, cfg, prompts, new_tokens, chunk_steps, repeats)
    n_tok = batch * new_tokens
    res: dict[str, Any] = {
        "backend": jax.default_backend(), "device": str(jax.devices()[0]), "preset": preset,
        "params": cfg.num_params, "flops_per_token": flops_per_token, "batch": batch, "prompt_len": prompt_len,
        "new_tokens": new_tokens, "chunk_steps": chunk_steps, "matmul_peak_gflops": peak / 1e9,
        "engine_s": t_eng, "engine_tokens_per_s": n_tok / t_eng,
        "engine_mfu": n_tok * flops_per_token / t_eng / peak, "engine_compiled_programs": programs,
        "torch_threads": torch.get_num_threads(), "target_ratio": 5.0,
        "decode_matmul_ms_per_step": t_mm * 1e3, "read_bandwidth_gbs": bandwidth / 1e9,
        "attention_mbytes_per_step": att_bytes / 2**20, "shape_bound_tokens_per_s": shape_bound,
        "engine_fraction_of_shape_bound": n_tok / t_eng / shape_bound,
        "load_average_1m": os.getloadavg()[0],
    }
    if with_transformers:
        with tempfile.TemporaryDirectory() as tmp:
            save_hf_checkpoint(tmp, params, cfg)
            t_hf, gen_hf = bench_transformers(tmp, prompts, new_tokens, repeats)
        res.update({
            "transformers_s": t_hf, "transformers_tokens_per_s": n_tok / t_hf,
            "transformers_mfu": n_tok * flops_per_token / t_hf / peak,
            "ratio_engine_vs_transformers": t_hf / t_eng,
            "bound_ratio_vs_transformers": shape_bound * t_hf / n_tok,
            "token_agreement": float((gen_eng == gen_hf).mean()),
            "first_token_agreement": float((gen_eng[:, 0] == gen_hf[:, 0]).mean()),
        })
    peak_after = fp32_matmul_peak()  # the machine is shared: keep the larger figure as the peak
    res["peak_bound_tokens_per_s"] = max(peak, peak_after) / flops_per_token
    if peak_after > peak:
        res["matmul_peak_gflops"] = peak_after / 1e9
        for side in ("engine", "transformers"):
            if f"{side}_mfu" in res:
                res[f"{side}_mfu"] *= peak / peak_after
    return res


def print_table(r: dict) -> None:
    """Human-readable summary of run_engine_benchmark's result."""
    print(f"backend {r['backend']}  preset {r['preset']} ({r['params'] / 1e6:.2f}M params)  B={r['batch']}  "
          f"prompt {r['prompt_len']}  new {r['new_tokens']}  fp32 matmul peak {r['matmul_peak_gflops']:.1f} GFLOP/s")
    print(f"{'generator':>14} {'seconds':>9} {'tokens/s':>10} {'MFU':>7}")
    sides = [("engine", "engine")] + ([("transformers", "transformers")] if "transformers_s" in r else [])
    for name, k in sides:
        print(f"{name:>14} {r[k + '_s']:>9.3f} {r[k + '_tokens_per_s']:>10.0f} {r[k + '_mfu']:>7.1%}")
    if "ratio_engine_vs_transformers" in r:
        print(f"ratio engine/transformers {r['ratio_engine_vs_transformers']:.2f}x (goal >= {r['target_ratio']:.0f}x); "
              f"greedy token agreement {r['token_agreement']:.1%} (first token {r['first_token_agreement']:.1%})")
    print(f"bounds: peak {r['peak_bound_tokens_per_s']:.0f} tokens/s; at these shapes {r['shape_bound_tokens_per_s']:.0f} "
          f"tokens/s (matmuls {r['decode_matmul_ms_per_step']:.2f} ms/step + {r['attention_mbytes_per_step']:.1f} MiB "
          f"K/V at {r['read_bandwidth_gbs']:.1f} GB/s); engine at {r['engine_fraction_of_shape_bound']:.0%} of it"
          + (f"; bound ratio {r['bound_ratio_vs_transformers']:.2f}x" if "bound_ratio_vs_transformers" in r else "")
          + f"; load average {r['load_average_1m']:.2f}")


def main(argv: list[str] | None = None) -> dict:
    """Parse arguments, run, print a table or one JSON object, return the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="4m", choices=sorted(PRESETS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--chunk-steps", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-transformers", action="store_true", help="time the engine only")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    for name in ("batch", "prompt_len", "new_tokens", "chunk_steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    r = run_engine_benchmark(args.preset, args.batch, args.prompt_len, args.new_tokens, args.chunk_steps,
                             args.repeats, not args.no_transformers)
    if args.json:
        print(json.dumps(r))
    else:
        print_table(r)
    return r


if __name__ == "__main__":
    main()
