"""A pool of CPU worker processes that run environment steps, isolated from the trainer process.

The parent has JAX initialised, so workers never come from a plain fork of it: they start with the
"forkserver" (default) or "spawn" method. Each worker has its own pipe and a short queue of requests
(`pipeline_depth`) that it serves in order, so it keeps working while the parent is busy decoding, and
the parent always knows which request a worker is running (the head of its queue): when the worker dies
(segfault, kill, OOM) or overruns that request's deadline, exactly that request ends with reward 0 and an
error tag ("worker_died" / "timeout"), the requests queued behind it go back to the pool's queue, the
worker is replaced, and nothing else is lost.

Deadline of a request = the tool timeouts of the calls in its last turn + the environment's
verify_timeout_s + deadline_margin_s, counted from when it reaches the head of a worker's queue (queued
requests do not age) and the worker has started: a new worker imports the verifier and the env modules
before it reports ready, and that start-up (seconds under load) is bounded by `start_timeout_s` on its
own, never charged to a request (else a replaced worker's first request timed out, which replaced the
worker again).
"""
from __future__ import annotations

import collections
import importlib
import json
import multiprocessing as mp
import signal
import time
import dataclasses
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Hashable, Mapping, Sequence

from vagent_jax.envs.base import EnvStep, Environment, Message, as_messages, failed_step, task_to_json
from vagent_jax.envs.registry import get_env, import_env_modules
from vagent_jax.envs.sandbox import sweep_stale

_PRELOAD = ["vagent_jax.envs.registry", "vagent_jax.envs.math_verifier", "vagent_jax.envs.sandbox"]
_READY = "__worker_ready__"  # a worker's first message: its imports are done


def _env_key(env_name: str, env_kwargs: Mapping[str, Any]) -> tuple[str, str]:
    return env_name, json.dumps(dict(env_kwargs), sort_keys=True)


def _worker_main(conn: Connection, env_modules: Sequence[str]) -> None:
    """Worker loop: receive (request_id, env_name, env_kwargs, task, messages), send (request_id, EnvStep)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in _PRELOAD:  # already imported when the forkserver preloaded them; else the cost is here
        importlib.import_module(name)
    import_env_modules(env_modules)
    try:
        conn.send(_READY)
    except (OSError, BrokenPipeError):
        return
    envs: dict[tuple[str, str], Environment] = {}
    while True:
        try:
            req = conn.recv()
        except (EOFError, OSError):
            return
        if req is None:
            return
        request_id, env_name, env_kwargs, task, messages = req
        try:
            key = _env_key(env_name, env_kwargs)
            if key not in envs:
                envs[key] = get_env(env_name, **env_kwargs)
            result = envs[key].step(task, messages)
        except Exception as e:  # any fault costs this request only
            result = failed_step("env_error", f"{type(e).__name__}: {e}")
        try:
            conn.send((request_id, result))
        except (TypeError, AttributeError, ValueError) as e:  # e.g. unpicklable details
            conn.send((request_id, failed_step("env_error", f"result not picklable: {e}")))


@dataclass
class _Worker:
    proc: Any
    conn: Connection
    queue: collections.deque = dataclasses.field(default_factory=collections.deque)  # (request_id, budget)
    head_since: float = 0.0  # when the head of the queue started running (or the worker started)
    ready: bool = False  # the worker has finished its imports; until then only start_timeout applies
    start_timeout_s: float = 120.0

    @property
    def request_id(self) -> Hashable | None:
        """The request the worker is running now (None when idle)."""
        return self.queue[0][0] if self.queue else None

    @property
    def deadline(self) -> float:
        return self.head_since + (self.queue[0][1] if self.ready else self.start_timeout_s)


class EnvWorkerPool:
    """Runs `Environment.step` calls in `num_workers` worker processes.

    submit(...) returns at once; poll(timeout) returns finished (request_id, EnvStep) pairs. Faults of a
    request (tool error, hang, segfault, killed worker) come back as done steps with reward 0 and an
    error tag; `metrics()` counts them by tag. Use as a context manager or call close().
    """

    def __init__(self, num_workers: int = 2, env_modules: Sequence[str] = (), deadline_margin_s: float = 2.0,
                 start_method: str = "forkserver", pipeline_depth: int = 8, start_timeout_s: float = 120.0) -> None:
        if not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"EnvWorkerPool num_workers must be a positive int, got {num_workers!r}")
        if not isinstance(pipeline_depth, int) or pipeline_depth < 1:
            raise ValueError(f"EnvWorkerPool pipeline_depth must be a positive int, got {pipeline_depth!r}")
        self._depth = pipeline_depth
        if start_method not in ("forkserver", "spawn"):
            raise ValueError(
                f"EnvWorkerPool start_method must be 'forkserver' or 'spawn' (never 'fork'), got {start_method!r}"
            )
        if not start_timeout_s > 0:
            raise ValueError(f"EnvWorkerPool start_timeout_s must be > 0, got {start_timeout_s!r}")
        self._start_timeout = start_timeout_s
        if deadline_margin_s < 0:
            raise ValueError(f"EnvWorkerPool deadline_margin_s must be >= 0, got {deadline_margin_s!r}")
        self._env_modules = tuple(env_modules)
        import_env_modules(self._env_modules)  # so names are checked in the parent at submit time
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            # reasoning-gym takes seconds to import: once in the forkserver, not in each worker's first request
            self._ctx.set_forkserver_preload(_PRELOAD + ["reasoning_gym"] + list(self._env_modules))
        self._margin = deadline_margin_s
        self._envs: dict[tuple[str, str], Environment] = {}
        self._pending: collections.deque = collections.deque()
        self._requests: dict[Hashable, tuple] = {}  # request_id -> (env_name, env_kwargs, task, messages)
        self._ready: list[tuple[Hashable, EnvStep]] = []
        self._metrics: collections.Counter = collections.Counter()
        self._closed = False
        sweep_stale()  # leftovers of killed runs before us (only of dead owners: other pools are untouched)
        self._workers = [self._start_worker() for _ in range(num_workers)]

    # ---- lifecycle ---------------------------------------------------------------------------------
    def _start_worker(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_worker_main, args=(child_conn, self._env_modules), daemon=True)
        proc.start()
        child_conn.close()
        self._metrics["workers_started"] += 1
        return _Worker(proc, parent_conn, head_since=time.monotonic(), start_timeout_s=self._start_timeout)

    def _replace(self, i: int) -> None:
        w = self._workers[i]
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(timeout=5)
        w.conn.close()
        sweep_stale()  # what an unisolated sandbox of the dead worker left (kernel sandboxes die with it)
        self._metrics["workers_replaced"] += 1
        self._workers[i] = self._start_worker()

    def close(self) -> None:
        """Stop the workers (politely, then by force); unfinished requests are dropped."""
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            try:
                w.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        end = time.monotonic() + 2.0
        for w in self._workers:
            w.proc.join(timeout=max(0.0, end - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(timeout=5)
            w.conn.close()
        sweep_stale()

    def __enter__(self) -> "EnvWorkerPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- requests ----------------------------------------------------------------------------------
    def _env(self, env_name: str, env_kwargs: Mapping[str, Any]) -> Environment:
        key = _env_key(env_name, env_kwargs)
        if key not in self._envs:
            self._envs[key] = get_env(env_name, **env_kwargs)
        return self._envs[key]

    def submit(self, request_id: Hashable, env_name: str, env_kwargs: Mapping[str, Any],
               task: Mapping[str, Any], messages: Sequence[Message | Mapping[str, Any]]) -> None:
        """Queue one step; returns at once. Unknown env names, bad kwargs or duplicate ids raise here."""
        if self._closed:
            raise RuntimeError("EnvWorkerPool.submit after close()")
        if request_id in self._requests:
            raise ValueError(f"EnvWorkerPool.submit: request_id {request_id!r} is already in flight")
        env = self._env(env_name, env_kwargs)
        task_to_json(task)
        msgs = as_messages(messages)
        budget = env.step_budget_s(msgs) + env.verify_timeout_s + self._margin
        self._requests[request_id] = (env_name, dict(env_kwargs), dict(task), msgs)
        self._pending.append((request_id, budget))
        self._metrics["submitted"] += 1
        self._dispatch()

    def _dispatch(self) -> None:
        """Top up every worker's queue (least loaded first) from the pool's queue."""
        while self._pending:
            i = min(range(len(self._workers)), key=lambda k: len(self._workers[k].queue))
            w = self._workers[i]
            if len(w.queue) >= self._depth:
                return
            if not w.queue and not w.proc.is_alive():  # died while idle: nothing lost, just replace it
                self._replace(i)
                w = self._workers[i]
            request_id, budget = self._pending.popleft()
            name, kwargs, task, msgs = self._requests[request_id]
            if not w.queue and w.ready:
                w.head_since = time.monotonic()
            w.queue.append((request_id, budget))
            try:
                w.conn.send((request_id, name, kwargs, task, msgs))
            except (OSError, BrokenPipeError):
                pass  # the dead worker is noticed by poll() and its head request ends as worker_died

    def _finish(self, request_id: Hashable, step: EnvStep) -> None:
        self._requests.pop(request_id, None)
        self._metrics["completed"] += 1
        if step.error:
            self._metrics[f"errors/{step.error}"] += 1
        self._ready.append((request_id, step))

    def _collect(self, wait_s: float) -> None:
        """Wait up to `wait_s` for worker messages or deaths, then enforce the head requests' deadlines."""
        busy = [w for w in self._workers if w.queue]
        if busy:
            nearest = min(w.deadline for w in busy) - time.monotonic()
            handles = [w.conn for w in busy] + [w.proc.sentinel for w in busy]
            wait(handles, timeout=max(0.0, min(wait_s, nearest)))
        for i, w in enumerate(self._workers):
            while w.queue:  # every result the worker has sent, in its queue order
                try:
                    got = w.conn.recv() if w.conn.poll() else None
                except (EOFError, OSError):
                    got = None
                if got is None:
                    break
                if got == _READY:  # start-up done: the head request's own deadline starts now
                    w.ready, w.head_since = True, time.monotonic()
                    continue
                w.queue.popleft()
                w.head_since = time.monotonic()
                self._finish(got[0], got[1])
            if not w.queue:
                continue
            if not w.proc.is_alive():
                code = w.proc.exitcode
                self._fail_head(i, failed_step("worker_died", f"worker exit code {code}"))
            elif time.monotonic() > w.deadline and not w.ready:
                self._fail_head(i, failed_step("worker_died", f"worker did not start within {w.start_timeout_s} s"))
            elif time.monotonic() > w.deadline:
                self._fail_head(i, failed_step("timeout", "request passed its deadline; worker killed"))

    def _fail_head(self, i: int, step: EnvStep) -> None:
        """End worker i's running request with `step`, requeue the requests behind it, replace the worker."""
        w = self._workers[i]
        rid, _ = w.queue.popleft()
        self._pending.extendleft(reversed(w.queue))
        w.queue.clear()
        self._finish(rid, step)
        self._replace(i)

    def poll(self, timeout: float = 0.0) -> list[tuple[Hashable, EnvStep]]:
        """Finished (request_id, EnvStep) pairs; waits up to `timeout` seconds for at least one."""
        end = time.monotonic() + max(0.0, timeout)
        while True:
            self._dispatch()
            if self._requests:
                self._collect(max(0.0, end - time.monotonic()))
                self._dispatch()
            if self._ready or time.monotonic() >= end or not self._requests:
                break
        out, self._ready = self._ready, []
        return out

    def in_flight(self) -> int:
        """Requests submitted and not yet returned by poll()."""
        return len(self._requests) + len(self._ready)

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (for monitoring and fault-injection tests)."""
        return [w.proc.pid for w in self._workers]

    def metrics(self) -> dict[str, int]:
        """Counters: submitted, completed, errors/<tag>, workers_started, workers_replaced."""
        return dict(self._metrics)
