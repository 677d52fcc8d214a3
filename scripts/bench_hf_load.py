"""Benchmark loading a Hugging Face checkpoint straight into a sharded run: wall time and bytes per device.

Writes a random checkpoint of a preset (default 100m, ~94M parameters, fp32 safetensors) with the
project's own exporter, then, in a fresh process per device count (1 and 8 fake CPU devices, mesh fsdp=N),
times `load_hf_checkpoint` into the run's parameter shardings: the first load (files already in the page
cache, since they were just written) and the best of the repeats. Bytes per device are summed over each
device's addressable shards: with fsdp = 8 a device should hold about total / 8 plus the replicated norms.

Usage: python scripts/bench_hf_load.py [--preset 100m] [--devices 1,8] [--repeats 3] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def write_checkpoint(preset: str, out: Path) -> dict:
    """A random fp32 checkpoint of `preset` in `out` (config.json + safetensors); returns its size."""
    import jax
    import numpy as np

    from vagent_jax.models.config import PRESETS
    from vagent_jax.models.hf_io import save_hf_checkpoint
    from vagent_jax.models.transformer import init_params

    cfg = PRESETS[preset]
    shapes = jax.eval_shape(lambda k: init_params(cfg, k), jax.random.key(0))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.normal(0, 0.02, s.shape).astype(np.float32), shapes)
    save_hf_checkpoint(out, params, cfg)
    files = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    return {"num_params": int(sum(x.size for x in jax.tree.leaves(params))), "file_bytes": int(files)}


def measure(ckpt: Path, devices: int, repeats: int) -> dict:
    """Load times and per-device bytes on `devices` devices (run in a process that has that many)."""
    import jax

    from vagent_jax.models.hf_io import load_hf_checkpoint
    from vagent_jax.sharding import MeshConfig, make_mesh

    mesh = make_mesh(MeshConfig(fsdp=devices), devices=jax.devices()[:devices])
    times = []
    for _ in range(1 + repeats):
        t0 = time.perf_counter()
        _, params = load_hf_checkpoint(ckpt, mesh)
        jax.block_until_ready(params)
        times.append(time.perf_counter() - t0)
    per_device: dict[str, int] = {}
    total = 0
    for leaf in jax.tree.leaves(params):
        total += leaf.nbytes
        for shard in leaf.addressable_shards:
            per_device[str(shard.device)] = per_device.get(str(shard.device), 0) + shard.data.nbytes
    most = max(per_device.values())
    return {"devices": devices, "first_load_s": times[0], "best_load_s": min(times[1:] or times),
            "param_bytes": total, "max_device_bytes": most, "ideal_device_bytes": total / devices,
            "max_over_ideal": most / (total / devices)}


def _child(ckpt: Path, devices: int, repeats: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    proc = subprocess.run([sys.executable, __file__, "--measure", str(ckpt), "--devices", str(devices),
                           "--repeats", str(repeats), "--json"], capture_output=True, text=True, env=env,
                          timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"bench_hf_load: the {devices}-device load failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Write the checkpoint, load it on each device count in its own process, print a table or JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="100m", help="model preset (vagent_jax.models.config.PRESETS)")
    p.add_argument("--devices", default="1,8", help="comma list of device counts (fake CPU devices)")
    p.add_argument("--repeats", type=int, default=3, help="loads timed after the first")
    p.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # child mode: load this checkpoint
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if args.repeats < 0:
        p.error(f"--repeats must be >= 0, got {args.repeats}")
    if args.measure:
        print(json.dumps(measure(Path(args.measure), int(args.devices), args.repeats)))
        return 0
    counts = [int(x) for x in args.devices.split(",") if x]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "ckpt"
        info = write_checkpoint(args.preset, ckpt)
        rows = [_child(ckpt, n, args.repeats) for n in counts]
    out = {"preset": args.preset, **info, "rows": rows}
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{args.preset}: {info['num_params'] / 1e6:.1f}M params, {info['file_bytes'] / 2**20:.0f} MiB of safetensors")
    print("| devices | first load s | best load s | max bytes/device (MiB) | / (total / devices) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['devices']} | {r['first_load_s']:.2f} | {r['best_load_s']:.2f} | "
              f"{r['max_device_bytes'] / 2**20:.1f} | {r['max_over_ideal']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
