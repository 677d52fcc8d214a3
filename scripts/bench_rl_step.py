"""Benchmark one RL step on the peers' workload (../shared/peers) through the RL loop's own code path:
`RLTrainer.collect` (persistent engine: set_params + reset, RolloutRunner, env steps, shaped rewards) and
`RLTrainer.update` (group advantages, the padded batch, make_rl_step), as `vagent rl` runs them.

Workload (the peers'): random Qwen2 (hidden 256, 4 layers, 4 heads, 2 KV heads, MLP 1024, qkv bias, tied),
vocab 515 (a byte BPE trained here), 8 prompts x 8 samples = 64 rollouts, 32 new tokens at T=1, DAPO
token-mean loss (eps 0.2 / 0.28), AdamW, one update per step. Differences, on purpose: prompts go through
the ChatML template (as in every run), so a prompt is ~9 tokens longer than the peers' 4; the reward is an
in-process environment (no worker processes: trivial work, measured as host time); dynamic sampling is
off because a random policy's groups rarely carry signal (the update then runs on every group, its FLOPs
unchanged). Steady state: `--warmup` steps dropped (compiles), the mean of `--steps` after them.

Breakdown per step: prefill and decode-chunk calls, per-slot trajectory reads (engine row), the rest of the
rollout (host work: scheduling, tokenizer, env, rewards), old-logprob pass (only with
--updates-per-batch > 1), update (the jitted step incl. batch transfer), the rest of the update (advantages,
batch building). Device calls are timed to completion (block_until_ready), which adds a sync per call.
FLOP bound: 2*N per prefilled or generated token + 6*N per update token (rows x padded length, as
computed), against the fp32 matmul peak measured in this run; MFU = those FLOPs / (step time x peak).
`--peers` also runs ../shared/peers (trl_grpo.py, tunix_grpo.py, ours_grpo.py) after building their venvs
with their setup scripts; a peer whose venv cannot be built or whose run fails is reported as skipped.

Usage: python scripts/bench_rl_step.py [--steps 6] [--warmup 1] [--peers] [--quick] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

PEERS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "peers")


def run(steps: int, warmup: int, quick: bool, updates_per_batch: int, layer_loop: str = "auto",
        compare: str | None = None) -> dict:
    """Time `warmup + steps` RL steps through collect + update; returns the JSON-ready result. compare: a
    second layer loop whose update alternates step by step with the first (same process, same rollouts'
    shapes), reported under "compare"."""
    from vagent_jax.bench_rl_workload import PEER_SHAPE, QUICK_SHAPE, build_trainer, timed_engine
    from vagent_jax.bench_timing import fp32_matmul_peak
    from vagent_jax.train.rl_step import make_rl_step

    shape = QUICK_SHAPE if quick else PEER_SHAPE
    peak = fp32_matmul_peak(256 if quick else 1024)
    trainer, pool, prompt_tokens = build_trainer(shape, updates_per_batch, _UNROLL[layer_loop])
    timers = timed_engine(trainer)
    updates = {layer_loop: trainer.rl_step}
    if compare is not None:
        c = trainer.cfg
        updates[compare] = timers.wrap("update", make_rl_step(
            trainer.model, c.optimizer, c.loss, trainer.mesh, c.micro_batches, max_len=trainer.l_max,
            temperature=c.engine.sampling.temperature, unroll_layers=_UNROLL[compare]))
    names = list(updates)
    rows: dict[str, list] = {n: [] for n in names}
    for step in range((warmup + steps) * len(names)):
        name = names[step % len(names)]
        trainer.rl_step = updates[name]
        timers.clear()
        t0 = time.perf_counter()
        kept, rewards, every, _ = trainer.collect(pool, step)
        t1 = time.perf_counter()
        trainer.update(kept, rewards, step, 0.0)
        t2 = time.perf_counter()
        rows[name].append(_breakdown(timers, t1 - t0, t2 - t1, every))
    result = _summary(rows[layer_loop], warmup, trainer, shape, prompt_tokens, peak, updates_per_batch)
    result.update(steps=steps, warmup=warmup, layer_loop=layer_loop, load_average_1m=os.getloadavg()[0])
    if compare is not None:
        other = _summary(rows[compare], warmup, trainer, shape, prompt_tokens, peak, updates_per_batch)
        result["compare"] = {"layer_loop": compare, **{k: other[k] for k in ("s_per_step", "mfu", "breakdown_s")},
                             "compare_over_main": other["s_per_step"] / result["s_per_step"]}
    pool.close()
    return result


_UNROLL = {"auto": None, "scan": False, "unrolled": True}


def _summary(rows: list, warmup: int, trainer, shape, prompt_tokens: int, peak: float, updates_per_batch: int) -> dict:
    """Steady-state means, FLOPs of one step, MFU and the FLOP bound."""
    import numpy as np

    steady = rows[warmup:]
    out = {k: float(np.mean([r[k] for r in steady])) for k in steady[0]}
    n_params = trainer.model.num_params
    T, R = trainer.cfg.engine.max_len, trainer.rows
    flops = 2.0 * n_params * (R * prompt_tokens + out["generated_tokens"]) + 6.0 * n_params * R * T
    flops += (2.0 * n_params * R * T) if updates_per_batch > 1 else 0.0  # the old-logprob forward
    return {"workload": shape.name, "params": n_params, "rollouts": R, "prompt_tokens": prompt_tokens,
            "max_new_tokens": shape.gen, "update_len": T, "updates_per_batch": updates_per_batch,
            "peak_flops": peak, "step_flops": flops, "flop_bound_s": flops / peak,
            "s_per_step": out["step_s"], "mfu": flops / (out["step_s"] * peak),
            "breakdown_s": out, "first_step_s": rows[0]["step_s"], "per_step_s": [r["step_s"] for r in rows]}


def _breakdown(timers, rollout_s: float, update_s: float, every: list) -> dict:
    """One step's seconds by part (see the module docstring)."""
    device_rollout = timers.total("prefill") + timers.total("decode") + timers.total("row")
    device_update = timers.total("update") + timers.total("logprobs")
    return {
        "step_s": rollout_s + update_s, "rollout_s": rollout_s,
        "prefill_s": timers.total("prefill"), "prefill_calls": float(timers.calls("prefill")),
        "decode_s": timers.total("decode"), "decode_chunks": float(timers.calls("decode")),
        "row_reads_s": timers.total("row"), "rollout_host_s": rollout_s - device_rollout,
        "old_logprob_s": timers.total("logprobs"), "update_step_s": timers.total("update"),
        "update_host_s": update_s - device_update,
        "generated_tokens": float(sum(x.trajectory.num_generated for x in every)),
    }


def run_peers(ours_s: float) -> dict:
    """Build the peer venvs (their setup scripts), run each peer script, return s/step and ratios."""
    import subprocess

    home = os.path.expanduser("~/.cache/vagent-peers")
    peers = {"trl": ("setup_trl.sh", os.environ.get("PEER_TRL_VENV", f"{home}/trl"), ["trl_grpo.py", "256", "4"]),
             "tunix": ("setup_tunix.sh", os.environ.get("PEER_TUNIX_VENV", f"{home}/tunix"), ["tunix_grpo.py"]),
             "ours_public_api": (None, None, ["ours_grpo.py"])}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out: dict = {}
    for name, (setup, venv, cmd) in peers.items():
        if setup is not None:
            built = subprocess.run(["bash", os.path.join(PEERS_DIR, setup)], capture_output=True, text=True)
            if built.returncode != 0:
                out[name] = {"skipped": f"{setup} failed: {built.stderr.strip()[-300:]}"}
                continue
        python = sys.executable if venv is None else os.path.join(venv, "bin", "python")
        done = subprocess.run([python, os.path.join(PEERS_DIR, cmd[0]), *cmd[1:]], capture_output=True, text=True,
                              cwd=root)
        last = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        if done.returncode != 0 or not last:
            out[name] = {"skipped": f"{cmd[0]} exited {done.returncode}: {done.stderr.strip()[-300:]}"}
            continue
        s = float(json.loads(last[-1])["s_per_step"])
        out[name] = {"s_per_step": s, "peer_over_ours": s / ours_s}
    return out


def main(argv: list[str] | None = None) -> dict:
    """Parse flags, run, print a table or one JSON object."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--updates-per-batch", type=int, default=1)
    ap.add_argument("--layer-loop", choices=("auto", "scan", "unrolled"), default="auto",
                    help="the update's layer loop (auto: unrolled on CPU, as runs do)")
    ap.add_argument("--compare", choices=("auto", "scan", "unrolled"), default=None,
                    help="alternate the update step by step with this layer loop and report both")
    ap.add_argument("--peers", action="store_true", help="also run ../shared/peers and print the ratios")
    ap.add_argument("--quick", action="store_true", help="tiny shapes: checks the script, not the machine")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    out = run(args.steps, args.warmup, args.quick, args.updates_per_batch, args.layer_loop, args.compare)
    if args.peers:
        out["peers"] = run_peers(out["s_per_step"])
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _print_table(out)
    return out


def _print_table(out: dict) -> None:
    b = out["breakdown_s"]
    print(f"{out['workload']}: {out['params']:,} params, {out['rollouts']} rollouts, prompt {out['prompt_tokens']} "
          f"+ {out['max_new_tokens']} new tokens, load {out['load_average_1m']:.1f}, peak "
          f"{out['peak_flops'] / 1e9:.1f} GFLOP/s")
    print(f"  s/step {out['s_per_step']:.3f} (mean of {out['steps']} after {out['warmup']} warm-up), FLOP bound "
          f"{out['flop_bound_s']:.3f} s, MFU {out['mfu'] * 100:.1f}%")
    for k in ("rollout_s", "prefill_s", "decode_s", "row_reads_s", "rollout_host_s", "old_logprob_s",
              "update_step_s", "update_host_s"):
        print(f"  {k:16s} {b[k] * 1e3:9.1f} ms")
    print(f"  prefill calls {b['prefill_calls']:.0f}, decode chunks {b['decode_chunks']:.0f}, generated "
          f"{b['generated_tokens']:.0f} tokens")
    if "compare" in out:
        c = out["compare"]
        print(f"  layer loop {c['layer_loop']} (alternated): s/step {c['s_per_step']:.3f}, update "
              f"{c['breakdown_s']['update_step_s'] * 1e3:.1f} ms = {c['compare_over_main']:.2f}x the {out['layer_loop']} step")
    for name, p in out.get("peers", {}).items():
        if "skipped" in p:
            print(f"  peer {name}: skipped ({p['skipped']})")
        else:
            print(f"  peer {name}: {p['s_per_step']:.3f} s/step = {p['peer_over_ours']:.2f}x ours")


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
