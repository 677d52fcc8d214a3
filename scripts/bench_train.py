"""Benchmark the training side on CPU: the jitted SFT step and one RL step (rollout + DAPO update).

SFT: make_sft_step on a preset (default 4m) at batch B x T tokens, one micro-batch; model FLOPs per step =
6 * N * tokens (N = non-embedding params, forward + backward) + 3 * the causal attention FLOPs
(4 * L * H * hd per (query, key) pair forward). RL: the ~4M config with 64 rollouts x 32 generated tokens
after a 32-token prompt: the decode engine's generate (sampling at T=1) and make_rl_step's DAPO update on
the [64, 64] batch (loss on the 32 generated tokens). MFU = model FLOP/s / the fp32 matmul peak measured in
the same run (before and after; the best is the peak). Times are best-of-N after a warm-up (compile).

Usage: python scripts/bench_train.py [--preset 4m] [--batch 8] [--seq 256] [--repeats 5] [--quick] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from vagent_jax.bench_timing import best_seconds, fp32_matmul_peak  # noqa: E402
from vagent_jax.engine import DecodeEngine, EngineConfig, SamplingConfig  # noqa: E402
from vagent_jax.models.config import PRESETS, ModelConfig  # noqa: E402
from vagent_jax.rl.policy_loss import PolicyLossConfig  # noqa: E402
from vagent_jax.sharding import MeshConfig, make_mesh  # noqa: E402
from vagent_jax.train.optimizer import OptimizerConfig  # noqa: E402
from vagent_jax.train.rl_step import make_rl_step  # noqa: E402
from vagent_jax.train.sft_step import make_sft_step  # noqa: E402
from vagent_jax.train.train_state import create_train_state  # noqa: E402


def train_flops(cfg: ModelConfig, batch: int, seq: int) -> float:
    """Forward + backward model FLOPs of one step on `batch` causal sequences of `seq` tokens."""
    pairs = batch * seq * (seq + 1) // 2
    attention = 4.0 * cfg.n_layers * cfg.n_heads * cfg.head_dim * pairs
    return 6.0 * cfg.num_non_embedding_params * batch * seq + 3.0 * attention


def _tokens(cfg: ModelConfig, batch: int, seq: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(4, cfg.vocab_size, (batch, seq), dtype=np.int32)


def bench_sft(cfg: ModelConfig, batch: int, seq: int, repeats: int, unroll_layers: bool | None = None) -> dict:
    """Best SFT step seconds, tokens/s and model FLOP/s (unroll_layers: None = the run's default)."""
    mesh = make_mesh(MeshConfig(), devices=jax.devices()[:1])
    opt = OptimizerConfig(lr=1e-4, warmup_steps=0, schedule="constant")
    state = create_train_state(cfg, opt, mesh, jax.random.key(0))
    step = make_sft_step(cfg, opt, mesh, unroll_layers=unroll_layers)
    tokens = _tokens(cfg, batch, seq, 0)
    b = {"tokens": tokens, "positions": np.broadcast_to(np.arange(seq, dtype=np.int32), (batch, seq)).copy(),
         "segment_ids": np.ones((batch, seq), np.int32), "loss_mask": np.ones((batch, seq), np.float32)}
    holder = {"state": state}

    def run():
        holder["state"], m = step(holder["state"], b)
        return m

    run()
    t, _ = best_seconds(run, repeats)
    flops = train_flops(cfg, batch, seq)
    return {"batch": batch, "seq": seq, "step_s": t, "tokens_per_s": batch * seq / t, "flops_per_step": flops,
            "flops_per_s": flops / t}


def bench_rl(cfg: ModelConfig, rollouts: int, prompt: int, gen: int, repeats: int) -> dict:
    """Best seconds of the rollout (engine generate at T=1) and of the DAPO update, and their sum."""
    mesh = make_mesh(MeshConfig(), devices=jax.devices()[:1])
    opt = OptimizerConfig(lr=1e-6, warmup_steps=0, schedule="constant")
    state = create_train_state(cfg, opt, mesh, jax.random.key(1))
    ecfg = EngineConfig(batch_slots=rollouts, max_len=prompt + gen + 1, max_new_tokens=gen, chunk_steps=16,
                        min_prefill_bucket=prompt, sampling=SamplingConfig(temperature=1.0))
    prompts = _tokens(cfg, rollouts, prompt, 2).tolist()
    engine = DecodeEngine(state.params, cfg, ecfg, stop_token_ids=())
    engine.generate(prompts)
    t_roll, trajs = best_seconds(lambda: engine.generate(prompts), repeats)
    T = prompt + gen
    tokens = np.zeros((rollouts, T), np.int32)
    mask = np.zeros((rollouts, T), np.float32)
    logp = np.zeros((rollouts, T), np.float32)
    for i, tr in enumerate(trajs):
        n = min(len(tr.tokens), T)
        tokens[i, :n], mask[i, :n], logp[i, :n] = tr.tokens[:n], tr.gen_mask[:n], tr.logprob[:n]
    adv = np.random.default_rng(3).standard_normal(rollouts).astype(np.float32)
    batch = {"tokens": tokens, "positions": np.broadcast_to(np.arange(T, dtype=np.int32), (rollouts, T)).copy(),
             "loss_mask": mask, "advantages": adv, "rollout_logp": logp}
    step = make_rl_step(cfg, opt, PolicyLossConfig(), mesh, max_len=T)
    holder = {"state": state}

    def update():
        holder["state"], m = step(holder["state"], batch, jax.random.key(4), 0.0)
        return m

    update()
    t_upd, _ = best_seconds(update, repeats)
    flops = train_flops(cfg, rollouts, T)
    return {"rollouts": rollouts, "prompt_tokens": prompt, "generated_tokens": gen, "rollout_s": t_roll,
            "update_s": t_upd, "step_s": t_roll + t_upd, "rollout_tokens_per_s": rollouts * gen / t_roll,
            "update_flops_per_s": flops / t_upd}


def main(argv: list[str] | None = None) -> dict:
    """Run both benchmarks; print a table or one JSON object."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="4m", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="tiny shapes: checks the script, not the machine")
    ap.add_argument("--compare-scan", action="store_true",
                    help="also time the SFT step with the layer loop as a lax.scan (the former default on CPU)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cfg = PRESETS[args.preset]
    batch, seq, repeats, rollouts, prompt, gen = args.batch, args.seq, args.repeats, 64, 32, 32
    if args.quick:
        cfg = ModelConfig(vocab_size=256, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64,
                          max_seq_len=128)
        batch, seq, repeats, rollouts, prompt, gen = 2, 32, 2, 8, 8, 8
    peaks = [fp32_matmul_peak(512 if args.quick else 1024)]
    sft = bench_sft(cfg, batch, seq, repeats)
    rl = bench_rl(cfg, rollouts, prompt, gen, repeats)
    scan = bench_sft(cfg, batch, seq, repeats, unroll_layers=False) if args.compare_scan else None
    peaks.append(fp32_matmul_peak(512 if args.quick else 1024))
    peak = max(peaks)
    sft["mfu"] = sft["flops_per_s"] / peak
    rl["update_mfu"] = rl["update_flops_per_s"] / peak
    if scan is not None:
        scan["mfu"] = scan["flops_per_s"] / peak
        sft["scan_layer_loop"] = {**scan, "scan_over_default": scan["step_s"] / sft["step_s"]}
    out = {"preset": "quick" if args.quick else args.preset, "params": cfg.num_params,
           "matmul_peak_flops": peak, "load_average_1m": os.getloadavg()[0], "sft": sft, "rl": rl}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"peak fp32 matmul {peak / 1e9:.1f} GFLOP/s, load {out['load_average_1m']:.1f}, params {out['params']:,}")
        print(f"SFT  B={batch} T={seq}: {sft['step_s'] * 1e3:.1f} ms/step, {sft['tokens_per_s']:.0f} tok/s, "
              f"MFU {100 * sft['mfu']:.1f}%")
        if scan is not None:
            print(f"SFT  layer loop as lax.scan: {scan['step_s'] * 1e3:.1f} ms/step, MFU {100 * scan['mfu']:.1f}% "
                  f"({sft['scan_layer_loop']['scan_over_default']:.2f}x the default's time)")
        print(f"RL   {rollouts} rollouts x {gen} tokens: rollout {rl['rollout_s'] * 1e3:.0f} ms + update "
              f"{rl['update_s'] * 1e3:.0f} ms = {rl['step_s'] * 1e3:.0f} ms/step (update MFU {100 * rl['update_mfu']:.1f}%)")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
