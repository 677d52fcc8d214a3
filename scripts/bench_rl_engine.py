"""Benchmark one RL step (rollout + DAPO update) with the run's persistent decode engine vs an engine
rebuilt every step (what `vagent rl` did before: a new DecodeEngine, unsharded state, each step).

Both modes run the same steps alternately in one process (mode A step, mode B step, ...) so machine drift
hits both: each step the update changes the params; the persistent engine takes them with set_params and
a new seed with reset, the rebuilt one is constructed around them. Rollout: `rollouts` prompts of `prompt`
tokens, `gen` sampled tokens each (T=1); update: make_rl_step on the [rollouts, prompt + gen] batch. The
first step of each mode (compiles) is dropped; the table gives the median of the rest.
`--devices N` runs on N fake CPU devices (fsdp = N; the sharded engine's layout, not a speed claim on a
2-core machine).

Usage: python scripts/bench_rl_engine.py [--preset 4m] [--steps 6] [--devices 1] [--quick] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def _setup_devices(argv: list[str] | None) -> None:
    """Fake CPU devices must be set before jax is imported."""
    args = list(sys.argv[1:] if argv is None else argv)
    n = next((int(a.split("=", 1)[1]) for a in args if a.startswith("--devices=")), None)
    if n is None and "--devices" in args:
        n = int(args[args.index("--devices") + 1])
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if n and n > 1:
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"


def run(preset: str, steps: int, devices: int, quick: bool) -> dict:
    """Step times of both modes; returns the JSON-ready result."""
    import jax
    import numpy as np
    from vagent_jax.models.config import PRESETS, ModelConfig
    from vagent_jax.rl.policy_loss import PolicyLossConfig
    from vagent_jax.engine import DecodeEngine, EngineConfig, SamplingConfig
    from vagent_jax.sharding import MeshConfig, make_mesh
    from vagent_jax.train.optimizer import OptimizerConfig
    from vagent_jax.train.rl_step import make_rl_step
    from vagent_jax.train.train_state import create_train_state

    cfg = PRESETS[preset]
    rollouts, prompt, gen = 64, 32, 32
    if quick:
        cfg = ModelConfig(vocab_size=256, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64,
                          max_seq_len=128)
        rollouts, prompt, gen = 8, 8, 8
    mesh = make_mesh(MeshConfig(), devices=jax.devices()[:devices])
    opt = OptimizerConfig(lr=1e-6, warmup_steps=0, schedule="constant")
    state = {"s": create_train_state(cfg, opt, mesh, jax.random.key(1))}
    ecfg = EngineConfig(batch_slots=rollouts, max_len=prompt + gen + 1, max_new_tokens=gen, chunk_steps=16,
                        min_prefill_bucket=prompt, sampling=SamplingConfig(temperature=1.0))
    prompts = np.random.default_rng(2).integers(4, cfg.vocab_size, (rollouts, prompt)).tolist()
    T = prompt + gen
    update = make_rl_step(cfg, opt, PolicyLossConfig(), mesh, max_len=T)
    persistent = DecodeEngine(state["s"].params, cfg, ecfg, (), mesh=mesh)

    def rl_step(mode: str, step: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        if mode == "persistent":
            engine = persistent
            engine.set_params(state["s"].params)
            engine.reset(seed=step)
        else:
            engine = DecodeEngine(state["s"].params, cfg, ecfg, (), seed=step)
        trajs = engine.generate(prompts)
        t1 = time.perf_counter()
        batch = {k: np.zeros((rollouts, T), dt) for k, dt in
                 (("tokens", np.int32), ("loss_mask", np.float32), ("rollout_logp", np.float32))}
        for i, tr in enumerate(trajs):
            n = min(len(tr.tokens), T)
            batch["tokens"][i, :n], batch["loss_mask"][i, :n] = tr.tokens[:n], tr.gen_mask[:n]
            batch["rollout_logp"][i, :n] = tr.logprob[:n]
        batch["positions"] = np.broadcast_to(np.arange(T, dtype=np.int32), (rollouts, T)).copy()
        batch["advantages"] = np.random.default_rng(step).standard_normal(rollouts).astype(np.float32)
        state["s"], m = update(state["s"], batch, jax.random.key(step), 0.0)
        jax.block_until_ready(m)
        return t1 - t0, time.perf_counter() - t0

    times: dict[str, list[tuple[float, float]]] = {"persistent": [], "rebuilt": []}
    for step in range(steps):
        for mode in (("persistent", "rebuilt") if step % 2 == 0 else ("rebuilt", "persistent")):
            times[mode].append(rl_step(mode, step))
    out = {"preset": "quick" if quick else preset, "params": cfg.num_params, "devices": devices,
           "rollouts": rollouts, "prompt_tokens": prompt, "generated_tokens": gen, "steps": steps,
           "load_average_1m": os.getloadavg()[0]}
    for mode, ts in times.items():
        rest = ts[1:] or ts
        out[mode] = {"first_step_s": ts[0][1], "rollout_s": statistics.median(t[0] for t in rest),
                     "step_s": statistics.median(t[1] for t in rest)}
    out["rebuilt_over_persistent"] = out["rebuilt"]["step_s"] / out["persistent"]["step_s"]
    return out


def main(argv: list[str] | None = None) -> dict:
    """Parse flags, run, print a table or one JSON object."""
    _setup_devices(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="4m")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="tiny shapes: checks the script, not the machine")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    out = run(args.preset, args.steps, args.devices, args.quick)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{out['preset']} ({out['params']:,} params), {out['devices']} device(s), {out['rollouts']} rollouts "
              f"x {out['generated_tokens']} tokens, median of {out['steps'] - 1} steps, "
              f"load {out['load_average_1m']:.1f}")
        for mode in ("persistent", "rebuilt"):
            r = out[mode]
            print(f"  {mode:10s} step {r['step_s'] * 1e3:8.1f} ms (rollout {r['rollout_s'] * 1e3:7.1f} ms), "
                  f"first step {r['first_step_s']:.1f} s")
        print(f"  rebuilt / persistent = {out['rebuilt_over_persistent']:.3f}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
