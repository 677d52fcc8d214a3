"""Benchmark the sandbox's per-call cost: wall seconds of one `run_python("print(1)")`, per backend.

RL runs thousands of tool calls, so the start-up cost of a sandbox matters. Measured in rounds that
alternate the backends (so load drifts hit all of them alike), after one untimed warm-up call each:
  floor          a bare `python -I -c "print(1)"` subprocess of the same interpreter (no sandbox at all);
  unisolated     rlimits + uid drop + audit hook: the design before kernel isolation;
  namespaces     ctypes namespaces (envs/sandbox_ns.py);
  bwrap          bubblewrap (envs/sandbox_bwrap.py), when installed.
Prints median and p90 milliseconds per call and each backend's overhead over the floor; with --json one
JSON object. Backends that do not work on this machine are listed with the reason.

Usage: python scripts/bench_sandbox.py [--calls 30] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from typing import Any, Callable

from vagent_jax.envs.sandbox import SandboxLimits, probe, run_python, sandbox_python

BACKENDS = ("unisolated", "namespaces", "bwrap")


def _floor(python: str) -> Callable[[], None]:
    def call() -> None:
        out = subprocess.run([python, "-I", "-c", "print(1)"], capture_output=True, text=True, check=True).stdout
        assert out == "1\n", out
    return call


def _sandboxed(backend: str) -> Callable[[], None]:
    limits = SandboxLimits(backend=backend, allow_unisolated=True, wall_s=30.0, cpu_s=10)

    def call() -> None:
        r = run_python("print(1)", limits)
        assert r.stdout == "1\n" and r.exit_code == 0, r
    return call


def measure(calls: int) -> dict[str, Any]:
    """Per-call milliseconds of every working backend and of the bare-interpreter floor."""
    python = sandbox_python()
    runners: dict[str, Callable[[], None]] = {"floor": _floor(python)}
    unavailable = {}
    for b in BACKENDS:
        why = None if b == "unisolated" else probe(b, python)
        if why is None:
            runners[b] = _sandboxed(b)
        else:
            unavailable[b] = why
    times: dict[str, list[float]] = {name: [] for name in runners}
    for fn in runners.values():
        fn()  # warm-up
    for _ in range(calls):
        for name, fn in runners.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    floor = statistics.median(times["floor"])
    result: dict[str, Any] = {"calls": calls, "python": python, "as_root": os.geteuid() == 0,
                              "load_avg_1m": os.getloadavg()[0], "unavailable": unavailable, "backends": {}}
    for name, ts in times.items():
        ts = sorted(ts)
        med = statistics.median(ts)
        result["backends"][name] = {"median_ms": med * 1e3, "p90_ms": ts[int(0.9 * (len(ts) - 1))] * 1e3,
                                    "overhead_ms": (med - floor) * 1e3}
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.calls < 1:
        ap.error(f"--calls must be >= 1, got {args.calls}")
    result = measure(args.calls)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.calls} calls each, python {result['python']}, root={result['as_root']}, "
              f"load {result['load_avg_1m']:.1f}")
        for name, r in result["backends"].items():
            print(f"  {name:<11} median {r['median_ms']:7.1f} ms  p90 {r['p90_ms']:7.1f} ms  "
                  f"over the floor {r['overhead_ms']:6.1f} ms")
        for name, why in result["unavailable"].items():
            print(f"  {name:<11} unavailable: {why}")
    return result


if __name__ == "__main__":
    main()
