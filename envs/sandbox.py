"""Run untrusted Python code in a sandbox that the kernel enforces.

Backends (SandboxLimits.backend; "auto" takes the first that works on this machine):
- "bwrap": bubblewrap builds the namespaces (envs/sandbox_bwrap.py);
- "namespaces": the same, set up with ctypes (envs/sandbox_ns.py);
- "unisolated": rlimits, a uid drop and an audit hook only (envs/sandbox_unisolated.py); never chosen by
  "auto" unless `allow_unisolated` is set, since the program then sees the host's files and network.
With a kernel backend the program runs in its own user, mount, pid, net, ipc, uts and cgroup namespaces:
a read-only view of the interpreter and its libraries, private size-limited tmpfs /work and /tmp, an
empty network namespace, and a pid namespace whose processes all die when the call ends. As root the
sandbox first drops to SANDBOX_UID. Resource limits (CPU, address space, file size, processes, open
files, no core) are set by the bootstrap before the user's code runs; the process limit counts inside
the sandbox's own user namespace, so sandboxes never share it. Output goes to unlinked files bounded by
RLIMIT_FSIZE and is read back as head + tail within `max_output_bytes` (envs/sandbox_output.py).
"""
from __future__ import annotations

import functools
import json
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable

from vagent_jax.envs import sandbox_unisolated as unisolated
from vagent_jax.envs.sandbox_bootstrap import bootstrap_argv
from vagent_jax.envs.sandbox_bwrap import bwrap_argv, bwrap_path, sandbox_init_pid
from vagent_jax.envs.sandbox_ns import NamespacePlan, namespace_preexec
from vagent_jax.envs.sandbox_output import read_head_and_tail, share_budget
from vagent_jax.envs.sandbox_seccomp import filter_program

BACKENDS = ("auto", "bwrap", "namespaces", "unisolated")
SANDBOX_UID = 65534  # the host uid of every sandbox when we run as root (isolation comes from namespaces)
_RO_PATHS = ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin", "/etc/ld.so.cache",
             "/etc/localtime")
_KILL_GRACE_S = 10.0  # after SIGTERM, how long the launcher may take to see the namespace gone

class SandboxUnavailable(RuntimeError):
    """No kernel isolation can be had here and running unisolated was not allowed."""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one sandboxed run (seconds, bytes, process count) and how it is isolated.

    audit_hook None = on only for the "unisolated" backend (it breaks libraries that load ctypes, and the
    kernel is the boundary elsewhere); True/False force it."""

    cpu_s: int = 2
    wall_s: float = 3.0
    memory_bytes: int = 512 * 2**20
    file_bytes: int = 1 * 2**20
    disk_bytes: int = 32 * 2**20  # size of each private tmpfs (/work, /tmp) of a kernel-isolated run
    nproc: int = 32
    nofile: int = 64
    max_output_bytes: int = 8192
    python_executable: str | None = None
    backend: str = "auto"
    allow_unisolated: bool = False
    audit_hook: bool | None = None

    def __post_init__(self) -> None:
        for key in ("cpu_s", "wall_s", "memory_bytes", "file_bytes", "disk_bytes", "nproc", "nofile",
                    "max_output_bytes"):
            if not getattr(self, key) > 0:
                raise ValueError(f"SandboxLimits.{key} must be > 0, got {getattr(self, key)!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"SandboxLimits.backend must be one of {BACKENDS}, got {self.backend!r}")


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed run produced and how it ended (exit code or killing signal, timeout, truncation)."""

    stdout: str
    stderr: str
    exit_code: int | None
    signal: int | None
    timed_out: bool
    truncated: bool
    wall_s: float
    backend: str = ""


def _world_usable(path: str) -> bool:
    """True when an unrelated unprivileged user can traverse to `path` and read/execute it."""
    path = os.path.realpath(path)
    try:
        mode = os.stat(path).st_mode
        if not (mode & stat.S_IROTH and mode & stat.S_IXOTH):
            return False
        d = os.path.dirname(path)
        while True:
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return False
            if d == os.path.dirname(d):
                return True
            d = os.path.dirname(d)
    except OSError:
        return False


@functools.lru_cache(maxsize=None)
def sandbox_python(explicit: str | None = None) -> str:
    """The interpreter for sandboxed code: one the unprivileged sandbox uid can execute (when root)."""
    if explicit is not None:
        if not os.path.exists(explicit):
            raise FileNotFoundError(f"sandbox python_executable {explicit!r} does not exist")
        return explicit
    if os.geteuid() != 0:
        return sys.executable
    candidates = [sys.executable, "/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3") or ""]
    for c in candidates:
        if c and _world_usable(c):
            return c
    raise RuntimeError(
        "sandbox: no Python interpreter is executable by an unprivileged user (tried "
        f"{[c for c in candidates if c]}); set SandboxLimits.python_executable"
    )


def read_only_paths(python: str) -> tuple[str, ...]:
    """Host paths the sandbox sees read-only: system libraries and the interpreter's prefixes."""
    prefixes = {os.path.dirname(os.path.dirname(os.path.realpath(python)))}
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        prefixes |= {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
    paths = list(_RO_PATHS)
    for p in sorted(prefixes):
        if p != "/" and not any(p == q or p.startswith(q + "/") for q in _RO_PATHS):
            paths.append(p)
    return tuple(paths)


_PROBES: dict[tuple[str, str], str | None] = {}


def _threads() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


def _probe_here(backend: str, python: str) -> str | None:
    try:
        if backend == "bwrap" and bwrap_path() is None:
            raise RuntimeError("bwrap is not installed")
        r = run_python("print('ok')", SandboxLimits(backend=backend, python_executable=python, wall_s=30.0, cpu_s=10))
        return None if r.stdout.strip() == "ok" else f"probe failed: {r.stdout!r} {r.stderr!r}"
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        return f"{type(e).__name__}: {e}"


def probe(backend: str, python: str) -> str | None:
    """None when `backend` runs a program here, else why not (cached per process).

    A multi-threaded process (a trainer with JAX) probes in a fresh single-threaded interpreter: the
    namespace backend's preexec_fn runs Python after fork, which is only safe without other threads."""
    key = (backend, python)
    if key not in _PROBES:
        if _threads() == 1:
            _PROBES[key] = _probe_here(backend, python)
        else:
            code = ("import json, sys\nfrom vagent_jax.envs.sandbox import probe\n"
                    "print(json.dumps(probe(sys.argv[1], sys.argv[2])))")
            r = subprocess.run([sys.executable, "-c", code, backend, python], capture_output=True, text=True,
                               timeout=120)
            _PROBES[key] = json.loads(r.stdout) if r.returncode == 0 else f"probe process failed: {r.stderr[-500:]}"
    return _PROBES[key]


def resolve_backend(limits: SandboxLimits) -> str:
    """The backend a run with `limits` uses; raises SandboxUnavailable (with every reason) when none fits."""
    if limits.backend != "auto":
        return limits.backend
    python = sandbox_python(limits.python_executable)
    reasons = []
    for backend in ("bwrap", "namespaces"):
        why = probe(backend, python)
        if why is None:
            return backend
        reasons.append(f"{backend}: {why}")
    if limits.allow_unisolated:
        return "unisolated"
    raise SandboxUnavailable("no kernel isolation for the sandbox on this machine (" + "; ".join(reasons) + ")")


def _exited_within(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait up to `timeout_s` for `proc` to exit, woken at once by its pidfd (Popen.wait(timeout) polls
    with sleeps of up to 50 ms, which was most of a short call's cost)."""
    try:
        fd = os.pidfd_open(proc.pid)
    except OSError:  # an old kernel: the polling wait
        try:
            proc.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        ready = select.select([fd], [], [], timeout_s)[0]
    finally:
        os.close(fd)
    if ready:
        proc.wait()
    return bool(ready)


def _wait(proc: subprocess.Popen, wall_s: float, kill: Callable[[], None]) -> bool:
    """Wait for the run; past `wall_s` stop it with `kill` and wait until it is gone. True on timeout."""
    if _exited_within(proc, wall_s):
        return False
    kill()
    if not _exited_within(proc, _KILL_GRACE_S):
        proc.kill()
        proc.wait()
    return True


def _run_namespaces(argv: list[str], code: str, limits: SandboxLimits, env: dict, out: BinaryIO,
                    err: BinaryIO) -> tuple[int, bool]:
    plan = NamespacePlan(read_only_paths(argv[0]), code.encode(), limits.disk_bytes,
                         drop_to_uid=SANDBOX_UID if os.geteuid() == 0 else None, seccomp=filter_program())
    try:
        proc = subprocess.Popen(argv, preexec_fn=namespace_preexec(plan), cwd="/", env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
                                close_fds=True)
    except subprocess.SubprocessError as e:  # the reason is what the child wrote to its stderr
        err.seek(0)
        raise subprocess.SubprocessError(err.read().decode(errors="replace").strip() or str(e)) from None
    # SIGTERM: the launcher SIGKILLs the namespace's init and exits once every process in it is gone
    timed_out = _wait(proc, limits.wall_s, lambda: proc.send_signal(signal.SIGTERM))
    return proc.returncode, timed_out


def _sandbox_init_pidfd(info_r: int) -> int | None:
    """A pidfd of the sandbox's pid 1, from bwrap's --info-fd (None when bwrap failed before writing it)."""
    data, init_pid, end = b"", None, time.monotonic() + _KILL_GRACE_S
    while init_pid is None and select.select([info_r], [], [], max(0.0, end - time.monotonic()))[0]:
        chunk = os.read(info_r, 65536)  # bwrap may write its JSON in pieces
        if not chunk:
            break
        data += chunk
        init_pid = sandbox_init_pid(data)
    try:
        return os.pidfd_open(init_pid) if init_pid else None
    except OSError:  # already gone (or no pidfd on this kernel)
        return None


def _kill_init(init_fd: int | None, proc: subprocess.Popen) -> None:
    """SIGKILL the sandbox's pid 1 (which takes its whole pid namespace), or bwrap when it is unknown."""
    try:
        signal.pidfd_send_signal(init_fd, signal.SIGKILL) if init_fd is not None else proc.kill()
    except (ProcessLookupError, OSError):
        pass


def _run_bwrap(argv: list[str], code: str, limits: SandboxLimits, env: dict, out: BinaryIO,
               err: BinaryIO) -> tuple[int, bool]:
    bwrap = bwrap_path()
    if bwrap is None:
        raise RuntimeError("sandbox backend 'bwrap': bwrap is not installed")
    as_root = os.geteuid() == 0
    info_r, info_w = os.pipe()
    with tempfile.TemporaryFile() as code_file, tempfile.TemporaryFile() as filter_file:
        for f, data in ((code_file, code.encode()), (filter_file, filter_program())):
            f.write(data)
            f.flush()
            f.seek(0)
        fd, filter_fd = code_file.fileno(), filter_file.fileno()
        try:
            proc = subprocess.Popen(
                bwrap_argv(bwrap, read_only_paths(argv[0]), limits.disk_bytes, fd, info_w, filter_fd) + argv,
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True, close_fds=True,
                pass_fds=(fd, filter_fd, info_w), user=SANDBOX_UID if as_root else None,
                group=SANDBOX_UID if as_root else None, extra_groups=[] if as_root else None)
        finally:
            os.close(info_w)
    init_fd = None
    try:  # info_r stays open until bwrap is done: it may write more, and a closed pipe would kill it
        init_fd = _sandbox_init_pidfd(info_r)
        timed_out = _wait(proc, limits.wall_s, lambda: _kill_init(init_fd, proc))
        # bwrap may exit before its pid 1 is gone; pid 1 exits only once every process of its namespace has
        if init_fd is not None and not select.select([init_fd], [], [], _KILL_GRACE_S)[0]:
            _kill_init(init_fd, proc)
            select.select([init_fd], [], [], _KILL_GRACE_S)
    finally:
        os.close(info_r)
        if init_fd is not None:
            os.close(init_fd)
    rc = proc.returncode
    # bwrap's pid 1 reports a program killed by signal N as exit code 128 + N (as a shell does)
    return (-(rc - 128) if 128 < rc < 128 + signal.NSIG else rc), timed_out


def _run_unisolated(argv: list[str], code: str, limits: SandboxLimits, env: dict, out: BinaryIO,
                    err: BinaryIO) -> tuple[int, bool]:
    uid, lock_fd = unisolated.acquire_uid() if os.geteuid() == 0 else (None, None)
    workdir = unisolated.make_workdir(code, uid)
    try:
        env = dict(env, HOME=workdir, TMPDIR=workdir)
        kw = dict(user=uid, group=uid, extra_groups=[]) if uid is not None else {}
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True, close_fds=True, **kw)

        def kill() -> None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

        timed_out = _wait(proc, limits.wall_s, kill)
        kill()
        unisolated.kill_uid_after(uid)
        return proc.returncode, timed_out
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if lock_fd is not None:
            os.close(lock_fd)


_RUNNERS = {"bwrap": _run_bwrap, "namespaces": _run_namespaces, "unisolated": _run_unisolated}


def run_python(code: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `code` as a Python script in the sandbox (see module docstring) and collect its output.

    Raises SandboxUnavailable when no backend fits, SubprocessError when the sandbox cannot be set up."""
    if not isinstance(code, str):
        raise ValueError(f"sandbox code must be a string, got {type(code).__name__}")
    backend = resolve_backend(limits)
    python = sandbox_python(limits.python_executable)
    hook = limits.audit_hook if limits.audit_hook is not None else backend == "unisolated"
    argv = bootstrap_argv(python, limits, hook)
    env = {"PATH": "/usr/bin:/bin", "HOME": "/work", "TMPDIR": "/tmp", "LANG": "C.UTF-8"}
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        rc, timed_out = _RUNNERS[backend](argv, code, limits, env, out, err)
        wall = time.monotonic() - t0
        out_budget, err_budget = share_budget(os.fstat(out.fileno()).st_size, os.fstat(err.fileno()).st_size,
                                              limits.max_output_bytes)
        stdout, out_cut = read_head_and_tail(out, out_budget)
        stderr, err_cut = read_head_and_tail(err, err_budget)
    sig = -rc if rc is not None and rc < 0 else None
    truncated = bool(out_cut or err_cut) or sig == signal.SIGXFSZ
    return SandboxResult(stdout, stderr, None if sig else rc, sig, timed_out, truncated, wall, backend)


def sweep_stale() -> int:
    """Remove what dead owners left (unisolated work dirs and uids); live sandboxes are never touched.

    Kernel-isolated runs leave nothing to sweep: their files live in the sandbox's tmpfs and their
    processes in its pid namespace, both gone with it."""
    return unisolated.sweep_stale_workdirs() + unisolated.reap_orphans()


def describe(result: SandboxResult) -> str:
    """The observation text shown to the model for a sandboxed run."""
    parts = []
    if result.stdout:
        parts.append(f"stdout:\n{result.stdout.rstrip()}")
    if result.stderr:
        parts.append(f"stderr:\n{result.stderr.rstrip()}")
    if result.truncated:
        parts.append("[output truncated]")
    if result.timed_out:
        parts.append("[killed: wall-clock timeout]")
    elif result.signal is not None:
        try:
            name = signal.Signals(result.signal).name
        except ValueError:
            name = str(result.signal)
        reason = {"SIGXCPU": "CPU time limit", "SIGKILL": "killed (CPU or memory limit)",
                  "SIGXFSZ": "output/file size limit"}.get(str(name), "signal")
        parts.append(f"[terminated by {name}: {reason}]")
    elif result.exit_code:
        parts.append(f"[exit code {result.exit_code}]")
    return "\n".join(parts) if parts else "[no output]"
