"""Benchmark the rollout host queue: does env latency overlap decoding (tokens/s with a 100 ms tool vs an instant one)?

Design. RolloutRunner drives a DecodeEngine (B slots) and an EnvWorkerPool over the `bench_tool` environment
(vagent_jax.envs.bench_tool): every assistant turn that the engine ends on a stop token goes to a worker,
whose `wait` tool sleeps --sleep-ms (the "slow" run) or returns at once (the "instant" run); its observation
is rendered with the ChatML template and prefilled into the slot, which resumes. Each episode is
--tool-calls tool turns plus one final turn (reward 1). The policy is a preset with random weights (its
vocabulary resized to a SentencePiece tokenizer trained here on calculator demonstrations), sampled at
temperature 1. Random weights never write <|im_end|> on purpose, so turns end on the real stop-token path:
the engine's stop ids are the template's plus k ordinary token ids, k = vocab / --turn-tokens, which random
sampling hits about once per --turn-tokens tokens; --max-new-tokens is large enough that few turns are cut
(a cut turn ends its trajectory with reward 0, as in training; the JSON counts them).
--trajectories requests (default 2 B) go through the B slots: new ones are admitted as slots free.
The engine's smallest prefill bucket is the prompt length rounded up to a power of two, so prompts and the
(shorter) observations share one token bucket: log2(B) + 1 prefill programs in all, compiled in warm-up.

Measured (same engine, same tasks, compiles done in an untimed warm-up pass of each run first):
  device tokens/s  generated tokens / rollout wall seconds, per run; ratio = slow / instant (goal >= 0.8).
  env_wait_s       seconds the engine sat idle because every trajectory in a slot awaited its environment.
  env_latency_s    mean seconds from a turn's submission to the pool until its result was read.
  engine tokens/s  DecodeEngine.generate on B prompts for --max-new-tokens tokens, no stops, no env: the
                   decode ceiling for reference.
Prints a table; with --json one JSON object. --tiny: a seconds-long smoke run (tiny model, 2 slots).

Usage: python scripts/bench_rollout.py [--preset 4m] [--slots 64] [--sleep-ms 100] [--tool-calls 2] [--json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vagent_jax.chat_template import render_chat, stop_token_ids  # noqa: E402
from vagent_jax.engine import DecodeEngine, EngineConfig, SamplingConfig  # noqa: E402
from vagent_jax.envs import EnvWorkerPool, get_env  # noqa: E402
from vagent_jax.envs import bench_tool  # noqa: E402
from vagent_jax.models.config import PRESETS, ModelConfig  # noqa: E402
from vagent_jax.models.transformer import init_params  # noqa: E402
from vagent_jax.rollout import RolloutResult, RolloutRunner  # noqa: E402
from vagent_jax.tokenizer import Tokenizer  # noqa: E402
from vagent_jax.tokenizer_train import train_sentencepiece  # noqa: E402

TEMPLATE = "chatml"
TARGET_RATIO = 0.8
# A model small enough that decode is fast on a CPU, so env latency weighs more than with 4m.
SMALL_PRESETS = {"tiny": ModelConfig(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16,
                                     d_ff=128, qk_norm=True, max_seq_len=1024)}


def random_params(cfg: ModelConfig, seed: int) -> Any:
    """init_params' tree with normal(init_std) weights and unit norms, drawn in numpy (nothing to compile)."""
    rng = np.random.default_rng(seed)

    def draw(path: Any, leaf: Any) -> jax.Array:
        if "norm" in jax.tree_util.keystr(path):
            return jnp.ones(leaf.shape, leaf.dtype)
        return jnp.asarray(rng.normal(0.0, cfg.init_std, leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, jax.eval_shape(lambda: init_params(cfg, jax.random.key(seed))))


def build_tokenizer(out_dir: str, n_tasks: int, vocab_size: int) -> Tokenizer:
    """SentencePiece tokenizer trained on calculator and bench_tool demonstrations (no download)."""
    calc, bench = get_env("calculator"), get_env(bench_tool.ENV_NAME, sleep_s=0.0)
    texts = [m.content for t in calc.generate_tasks(n_tasks, seed=0) for m in calc.demonstration(t)]
    texts += [m.content for t in bench.generate_tasks(4, seed=0) for m in bench.demonstration(t)]
    return train_sentencepiece(texts, out_dir, vocab_size=vocab_size)


def bench_stop_ids(tok: Tokenizer, turn_tokens: int, seed: int = 0) -> list[int]:
    """The template's stop ids plus k = vocab // turn_tokens ordinary ids (random sampling hits ~1 per turn)."""
    ordinary = [i for i in range(tok.vocab_size) if not tok.is_special(i)]
    k = max(1, min(len(ordinary), tok.vocab_size // turn_tokens))
    extra = np.random.default_rng(seed).choice(ordinary, size=k, replace=False)
    return list(stop_token_ids(TEMPLATE, tok)) + sorted(int(i) for i in extra)


def run_stats(results: list[RolloutResult], stats: dict, programs_before: int, programs_after: int) -> dict:
    """Summary of one timed rollout run (stats: the runner's counter for that run only)."""
    wall = stats["wall_s"]
    gen = sum(r.trajectory.num_generated for r in results)
    full = [r for r in results if not r.truncated and r.error is None]
    turns = sum(r.turns for r in results)
    return {
        "wall_s": wall, "generated_tokens": gen, "tokens_per_s": gen / wall,
        "env_wait_s": stats.get("env_wait_s", 0.0), "env_wait_frac": stats.get("env_wait_s", 0.0) / wall,
        "env_latency_s": stats.get("env_latency_s", 0.0) / max(1, stats.get("env_steps", 0)),
        "decode_s": stats.get("decode_s", 0.0), "trajectories": len(results), "turns": turns,
        "tokens_per_turn": gen / max(1, turns),
        "tool_calls_per_trajectory": sum(r.tool_calls for r in results) / max(1, len(results)),
        "min_tool_calls_complete": min((r.tool_calls for r in full), default=0),
        "truncated": sum(r.truncated for r in results), "errors": sum(r.error is not None for r in results),
        "new_programs": programs_after - programs_before,
    }


def timed_rollout(engine: DecodeEngine, tok: Tokenizer, pool: EnvWorkerPool, env_kwargs: dict,
                  tasks: list[dict]) -> dict:
    """One untimed warm-up pass (compiles the prefill buckets it meets), then the timed pass."""
    RolloutRunner(engine, tok, TEMPLATE, pool, bench_tool.ENV_NAME, env_kwargs).run(tasks)
    runner = RolloutRunner(engine, tok, TEMPLATE, pool, bench_tool.ENV_NAME, env_kwargs)
    before = engine.compiled_programs
    results = runner.run(tasks)
    return run_stats(results, dict(runner.stats), before, engine.compiled_programs)


def pure_engine_tokens_per_s(params: Any, cfg: ModelConfig, ecfg: EngineConfig, prompts: list[list[int]]) -> float:
    """DecodeEngine.generate over B prompts, every row decoding max_new_tokens (no stop ids): tokens / second."""
    engine = DecodeEngine(params, cfg, ecfg, stop_token_ids=(), seed=1)
    engine.generate(prompts)  # warm-up compiles
    t0 = time.perf_counter()
    out = engine.generate(prompts)
    return sum(tr.num_generated for tr in out) / (time.perf_counter() - t0)


def run_rollout_benchmark(preset: str = "4m", slots: int = 64, trajectories: int | None = None,
                          tool_calls: int = 2, sleep_ms: float = 100.0, workers: int = 16, turn_tokens: int = 24,
                          max_new_tokens: int = 128, chunk_steps: int = 16, tokenizer_tasks: int = 2000,
                          seed: int = 0) -> dict:
    """Build the policy, tokenizer, engine and pool; time instant vs slow tool rollouts; return the results."""
    trajectories = trajectories or 2 * slots
    with tempfile.TemporaryDirectory() as tmp:
        tok = build_tokenizer(tmp, tokenizer_tasks, vocab_size=2048)
    env = get_env(bench_tool.ENV_NAME, tool_calls=tool_calls, sleep_s=0.0)
    tasks = env.generate_tasks(trajectories, seed=seed)
    prompt_len = max(len(render_chat([m.to_dict() for m in env.initial_messages(t)], tok, TEMPLATE, True)[0])
                     for t in tasks)
    suffix_len = 32  # the wait tool's observation + headers, in tokens (generous)
    max_len = prompt_len + (tool_calls + 1) * (max_new_tokens + suffix_len) + 1
    base = SMALL_PRESETS.get(preset) or PRESETS[preset]
    cfg = dataclasses.replace(base, vocab_size=tok.vocab_size, max_seq_len=max(base.max_seq_len, max_len))
    params = random_params(cfg, seed)
    bucket = 1 << (prompt_len - 1).bit_length()  # one token bucket holds every prompt and observation:
    ecfg = EngineConfig(batch_slots=slots, max_len=max_len, max_new_tokens=max_new_tokens, chunk_steps=chunk_steps,
                        min_prefill_bucket=bucket, sampling=SamplingConfig(temperature=1.0))  # few compiles
    stops = bench_stop_ids(tok, turn_tokens, seed)
    engine = DecodeEngine(params, cfg, ecfg, stops, seed=seed)
    kwargs_fast = {"tool_calls": tool_calls, "sleep_s": 0.0}
    kwargs_slow = {"tool_calls": tool_calls, "sleep_s": sleep_ms / 1000.0}
    with EnvWorkerPool(num_workers=workers, env_modules=[bench_tool.MODULE]) as pool:
        fast = timed_rollout(engine, tok, pool, kwargs_fast, tasks)
        slow = timed_rollout(engine, tok, pool, kwargs_slow, tasks)
    rng = np.random.default_rng(seed)
    prompts = rng.integers(4, tok.vocab_size, (slots, prompt_len)).tolist()
    pure = pure_engine_tokens_per_s(params, cfg, ecfg, prompts)
    return {
        "backend": jax.default_backend(), "device": str(jax.devices()[0]), "preset": preset,
        "params": cfg.num_params, "vocab_size": cfg.vocab_size, "slots": slots, "trajectories": trajectories,
        "tool_calls": tool_calls, "sleep_ms": sleep_ms, "workers": workers, "chunk_steps": chunk_steps,
        "max_new_tokens": max_new_tokens, "max_len": max_len, "stop_ids": len(stops), "turn_tokens": turn_tokens,
        "engine_tokens_per_s": pure, "instant": fast, "slow": slow,
        "ratio": slow["tokens_per_s"] / fast["tokens_per_s"], "target_ratio": TARGET_RATIO,
        "load_avg_1m": os.getloadavg()[0],
    }


def print_table(r: dict) -> None:
    """Human-readable summary of run_rollout_benchmark's result."""
    print(f"backend {r['backend']}  preset {r['preset']} ({r['params'] / 1e6:.2f}M params)  slots {r['slots']}  "
          f"trajectories {r['trajectories']}  tool calls {r['tool_calls']}  workers {r['workers']}  "
          f"load {r['load_avg_1m']:.1f}")
    print(f"{'tool':>10} {'wall s':>8} {'tokens':>8} {'tokens/s':>9} {'env wait s':>10} {'env lat ms':>10} "
          f"{'tok/turn':>8} {'trunc':>6}")
    for name, k in ((f"{r['sleep_ms']:.0f} ms", "slow"), ("instant", "instant")):
        s = r[k]
        print(f"{name:>10} {s['wall_s']:>8.2f} {s['generated_tokens']:>8} {s['tokens_per_s']:>9.0f} "
              f"{s['env_wait_s']:>10.2f} {s['env_latency_s'] * 1e3:>10.1f} {s['tokens_per_turn']:>8.1f} "
              f"{s['truncated']:>6}")
    print(f"ratio slow/instant {r['ratio']:.3f} (goal >= {r['target_ratio']}); "
          f"pure engine {r['engine_tokens_per_s']:.0f} tokens/s")


def main(argv: list[str] | None = None) -> dict:
    """Parse arguments, run, print a table or one JSON object, return the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="4m", choices=sorted(PRESETS) + sorted(SMALL_PRESETS))
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--trajectories", type=int, default=0, help="default: 2 * slots")
    parser.add_argument("--tool-calls", type=int, default=2)
    parser.add_argument("--sleep-ms", type=float, default=100.0)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--turn-tokens", type=int, default=24, help="mean tokens per turn the stop ids aim at")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--chunk-steps", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="seconds-long smoke run: tiny model, 2 slots")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    for name in ("slots", "workers", "turn_tokens", "max_new_tokens", "chunk_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.tool_calls < 0 or args.sleep_ms < 0 or args.trajectories < 0:
        parser.error("--tool-calls, --sleep-ms and --trajectories must be >= 0")
    kw: dict[str, Any] = dict(preset=args.preset, slots=args.slots, trajectories=args.trajectories or None,
                              tool_calls=args.tool_calls, sleep_ms=args.sleep_ms, workers=args.workers,
                              turn_tokens=args.turn_tokens, max_new_tokens=args.max_new_tokens,
                              chunk_steps=args.chunk_steps, seed=args.seed)
    if args.tiny:
        kw.update(preset="tiny", slots=2, trajectories=4, sleep_ms=min(args.sleep_ms, 20.0), workers=2,
                  turn_tokens=4, max_new_tokens=8, chunk_steps=4, tokenizer_tasks=200)
    r = run_rollout_benchmark(**kw)
    if args.json:
        print(json.dumps(r))
    else:
        print_table(r)
    return r


if __name__ == "__main__":
    main()
