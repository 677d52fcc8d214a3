"""Soak the env worker pool: N two-turn rollouts through the real EnvWorkerPool while faults strike at fixed
rates (the environment raises, hangs past its deadline, segfaults, its worker is SIGKILLed, the verifier
raises; tests/fault_fixture_env.py). Checks that every rollout comes back exactly once, that each fault is
counted under its kind, that the pool is back to its worker count, and that after close() no worker
process, temporary file or file descriptor is left behind.

    .venv/bin/python scripts/soak_env_pool.py [--rollouts 1000] [--workers 4] [--seed 0] [--json]

Exit status 1 when any check fails. The script works in a private temporary directory (multiprocessing and
the workers put their files there), so leftovers are its own, not other users' of the machine.
"""
from __future__ import annotations

import atexit
import shutil
import tempfile

# Registered before multiprocessing is imported, so it runs after multiprocessing's exit finalizer (which
# removes the forkserver's socket directory inside it). Only in the script's own process: the forkserver
# and its workers import this file again as __mp_main__.
PRIVATE_TMP = tempfile.mkdtemp(prefix="soak_env_pool.") if __name__ == "__main__" else ""
if PRIVATE_TMP:
    atexit.register(shutil.rmtree, PRIVATE_TMP, True)

import argparse  # noqa: E402
import collections  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))  # the fault fixture env (workers get this sys.path from the forkserver)

from vagent_jax.envs.base import Message  # noqa: E402  (imported first: the sandbox's lock dir stays shared)
from vagent_jax.envs.worker_pool import EnvWorkerPool  # noqa: E402

RATES = {"env_raises": 0.03, "hang": 0.01, "segfault": 0.02, "worker_sigkill": 0.02, "verifier_raises": 0.03}
MARGIN_S = 3.0  # deadline margin: generous so healthy requests never time out on a loaded machine


def _deadline_s(rollouts: int) -> float:
    """The whole soak's deadline: a lost trajectory keeps it waiting until then, and fails the checks.
    1,000 rollouts take ~50 s on an idle 2-core machine: this is ~20x that."""
    return 120.0 + rollouts


def _turn(task: dict, turn: int) -> list[dict]:
    """The conversation up to the assistant's `turn` (1: a note tool call, 2: the answer)."""
    call = json.dumps({"name": "note", "arguments": {"text": f"task {task['id']}"}})
    msgs = [Message("user", f"say {task['answer']}"), Message("assistant", f"<tool_call>{call}</tool_call>")]
    if turn == 2:
        msgs += [Message("tool", f"noted: task {task['id']}"),
                 Message("assistant", f"<answer>{task['answer']}</answer>")]
    return [m.to_dict() for m in msgs]


def _fault_kind(step: Any) -> str:
    """What a finished rollout says happened: ok, or the fault kind its error tag and detail name."""
    if step.error is None:
        return "ok" if step.reward.correct else "wrong"
    detail = step.reward.details.get("detail", "")
    if step.error == "worker_died":
        return {"worker exit code -11": "segfault", "worker exit code -9": "worker_sigkill"}.get(detail, detail)
    if step.error == "timeout":  # the pool's deadline (a hang), or an in-worker tool / verifier timeout
        return "hang" if "passed its deadline" in detail else f"timeout: {detail}"
    return {"env_error": "env_raises", "verifier_error": "verifier_raises"}.get(step.error, step.error)


def _live_descendants(root: int) -> set[int]:
    """Live (non-zombie) processes below `root`, from /proc."""
    parent: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parent[int(name)] = int(fields[1])
    out, frontier = set(), {root}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - out
        out |= frontier
    return out


def _fd_target(fd: str) -> str:
    try:
        return f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}"
    except OSError:
        return f"{fd} (closed)"


def _run_rollouts(pool: EnvWorkerPool, tasks: list[dict], seen_workers: set[int]) -> dict[str, Any]:
    """Drive every rollout to its end; count returns per rollout."""
    for t in tasks:
        pool.submit((t["id"], 1), "fault_test", {}, t, _turn(t, 1))
    returns: collections.Counter = collections.Counter()
    kinds: dict[int, str] = {}
    stray = requests = 0
    end = time.monotonic() + _deadline_s(len(tasks))
    while len(kinds) < len(tasks) and time.monotonic() < end:
        seen_workers.update(pool.worker_pids())
        for (i, turn), step in pool.poll(timeout=1.0):
            requests += 1
            if step.done:
                returns[i] += 1
                kinds[i] = _fault_kind(step)
            elif turn == 1:
                pool.submit((i, 2), "fault_test", {}, tasks[i], _turn(tasks[i], 2))
            else:
                stray += 1  # a second turn that did not end the rollout: cannot happen in this env
    late = pool.poll(timeout=2.0)  # nothing may come back after every rollout did
    for (i, _), step in late:
        returns[i] += 1
    return {"returns": returns, "kinds": kinds, "stray": stray, "late": len(late), "requests": requests}


def soak(rollouts: int, workers: int, seed: int) -> dict[str, Any]:
    """Run the soak in the current (private) temp dir; returns the measured numbers and the checks."""
    from fault_fixture_env import fault_tasks

    tasks = fault_tasks(rollouts, RATES, seed)
    injected = collections.Counter(t["fault"] for t in tasks)
    # The forkserver is a process-lifetime helper: a first pool starts it (with the pool's own preloads)
    # before the baseline is taken, so the soaked pool's leftovers are counted, not the forkserver.
    EnvWorkerPool(1, env_modules=["fault_fixture_env"]).close()
    tmp = Path(tempfile.gettempdir())
    base_fds, base_tmp = set(os.listdir("/proc/self/fd")), set(os.listdir(tmp))
    base_procs = _live_descendants(os.getpid())
    seen: set[int] = set()
    t0 = time.perf_counter()
    with EnvWorkerPool(workers, env_modules=["fault_fixture_env"], deadline_margin_s=MARGIN_S) as pool:
        got = _run_rollouts(pool, tasks, seen)
        seen.update(pool.worker_pids())
        workers_at_end = sum(os.path.exists(f"/proc/{p}") for p in pool.worker_pids())
        metrics = pool.metrics()
    seconds = time.perf_counter() - t0
    fds_held_by_closed_pool = len(set(os.listdir("/proc/self/fd")) - base_fds)
    del pool  # a closed pool's Process objects hold each worker's exit-status pipe until they are collected
    gc.collect()
    leftover_procs = sorted(_live_descendants(os.getpid()) - base_procs)
    leftover_fds = sorted(_fd_target(fd) for fd in set(os.listdir("/proc/self/fd")) - base_fds)
    leftover_tmp = sorted(set(os.listdir(tmp)) - base_tmp)
    counted = collections.Counter(got["kinds"].values())
    returns = got["returns"]
    want = {k: injected[k] for k in RATES}
    checks = {
        "every_rollout_back_once": sorted(returns) == list(range(rollouts)) and set(returns.values()) == {1},
        "faults_counted_by_kind": {k: counted[k] for k in RATES} == want and counted["ok"] == injected["none"],
        "workers_back_to_setting": workers_at_end == workers,
        "no_process_left": not leftover_procs and not any(os.path.exists(f"/proc/{p}") and
                                                          Path(f"/proc/{p}/stat").read_text().split()[2] != "Z"
                                                          for p in seen),
        "no_fd_left": not leftover_fds,
        "no_temp_left": not leftover_tmp,
    }
    return {"rollouts": rollouts, "workers": workers, "seed": seed, "seconds": round(seconds, 2),
            "requests": got["requests"], "rollouts_per_s": round(rollouts / seconds, 1),
            "injected": want, "counted": dict(counted), "lost": rollouts - len(returns),
            "returned_twice": sum(v > 1 for v in returns.values()), "late_results": got["late"],
            "workers_started": metrics.get("workers_started", 0),
            "workers_replaced": metrics.get("workers_replaced", 0), "workers_at_end": workers_at_end,
            "fds_held_by_closed_pool": fds_held_by_closed_pool, "leftover_processes": leftover_procs,
            "leftover_fds": leftover_fds, "leftover_temp": leftover_tmp,
            "checks": checks, "ok": all(checks.values())}


def _table(r: dict[str, Any]) -> str:
    lines = [f"{r['rollouts']} rollouts, {r['requests']} env requests, {r['workers']} workers, "
             f"{r['seconds']} s ({r['rollouts_per_s']} rollouts/s)",
             f"{'fault':<16}{'injected':>9}{'counted':>9}"]
    lines += [f"{k:<16}{r['injected'][k]:>9}{r['counted'].get(k, 0):>9}" for k in RATES]
    lines.append(f"{'ok':<16}{r['rollouts'] - sum(r['injected'].values()):>9}{r['counted'].get('ok', 0):>9}")
    lines.append(f"workers replaced {r['workers_replaced']}, at end {r['workers_at_end']}/{r['workers']}; "
                 f"lost {r['lost']}, twice {r['returned_twice']}")
    lines += [f"  {'PASS' if v else 'FAIL'}  {k}" for k, v in r["checks"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rollouts", type=int, default=1000)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    os.environ["TMPDIR"] = tempfile.tempdir = PRIVATE_TMP  # the forkserver and workers inherit it
    result = soak(args.rollouts, args.workers, args.seed)
    print(json.dumps(result) if args.json else _table(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
