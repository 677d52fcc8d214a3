"""Run untrusted Python code in a contained subprocess.

Containment, layer by layer:
- resource limits in the child: RLIMIT_CPU, RLIMIT_AS (memory), RLIMIT_FSIZE (file and output size),
  RLIMIT_NPROC (fork bombs), RLIMIT_NOFILE, no core dumps;
- when we run as root (RLIMIT_NPROC does not apply to root), the child drops to a private unprivileged
  uid/gid taken from a lock-guarded range, so it cannot touch root's files, cannot read the parent's
  /proc/<pid>/environ, and every process it leaves behind can be found by uid and killed;
- a new session (process group); on the wall-clock timeout the group and every process of the uid die;
- a private temporary working directory, removed afterwards; an empty environment (PATH, HOME, LANG only);
- an audit hook in the child refuses writes outside the working directory (so world-writable /tmp is
  off limits too), running other programs (subprocess, exec, system, spawn) and ctypes;
- stdout/stderr go to files bounded by RLIMIT_FSIZE, and only the first `max_output_bytes` are read back.
"""
from __future__ import annotations

import fcntl
import functools
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

UID_BASE = 61000
UID_COUNT = 1000
_LOCK_DIR = os.path.join(tempfile.gettempdir(), "vagent_sandbox_uids")

# Runs in the child before the user's code: installs the audit hook, then executes main.py.
_BOOTSTRAP = r'''
import os, sys
_ROOT = os.path.realpath(os.getcwd())
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PATH_EVENTS = {"os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1), "os.link": (0, 1),
                "os.symlink": (1,), "os.chmod": (0,), "os.chown": (0,), "os.truncate": (0,), "os.utime": (0,),
                "shutil.rmtree": (0,), "shutil.copyfile": (1,), "shutil.move": (1,), "os.mkfifo": (0,),
                "os.mknod": (0,)}
_BLOCKED_PREFIXES = ("subprocess.", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "ctypes.",
                     "os.startfile", "pty.", "os.forkpty")

def _inside(path):
    if isinstance(path, int) or path is None:
        return True
    full = os.path.realpath(os.fsdecode(path))
    return full == _ROOT or full.startswith(_ROOT + os.sep)

def _hook(event, args):
    if event == "open":
        if args[2] & _WRITE_FLAGS and not _inside(args[0]):
            raise PermissionError(f"sandbox: writing outside the working directory is not allowed: {args[0]}")
    elif event in _PATH_EVENTS:
        for i in _PATH_EVENTS[event]:
            if i < len(args) and not _inside(args[i]):
                raise PermissionError(f"sandbox: {event} outside the working directory is not allowed: {args[i]}")
    elif event.startswith(_BLOCKED_PREFIXES):
        raise PermissionError(f"sandbox: {event} is not allowed")

sys.addaudithook(_hook)
del _hook
sys.argv = ["main.py"]
with open("main.py") as _f:
    _code = compile(_f.read(), "main.py", "exec")
exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
'''


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one sandboxed run (seconds, bytes, process count)."""

    cpu_s: int = 2
    wall_s: float = 3.0
    memory_bytes: int = 512 * 2**20
    file_bytes: int = 1 * 2**20
    nproc: int = 32
    nofile: int = 64
    max_output_bytes: int = 8192
    python_executable: str | None = None

    def __post_init__(self) -> None:
        for key in ("cpu_s", "wall_s", "memory_bytes", "file_bytes", "nproc", "nofile", "max_output_bytes"):
            if not getattr(self, key) > 0:
                raise ValueError(f"SandboxLimits.{key} must be > 0, got {getattr(self, key)!r}")


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


def _uid_processes(uid: int) -> list[tuple[int, bool]]:
    """(pid, is_zombie) of every process whose real uid is `uid`."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            out.append((int(name), fields.get("State", "").strip().startswith("Z")))
    return out


def _acquire_uid() -> tuple[int, int]:
    """Lock a free sandbox uid (no process running under it); returns (uid, lock fd)."""
    os.makedirs(_LOCK_DIR, mode=0o700, exist_ok=True)
    st = os.lstat(_LOCK_DIR)
    if st.st_uid != os.geteuid() or not stat.S_ISDIR(st.st_mode) or st.st_mode & 0o077:
        raise RuntimeError(f"sandbox lock directory {_LOCK_DIR} must be a private directory owned by us")
    start = os.getpid() % UID_COUNT
    for k in range(UID_COUNT):
        uid = UID_BASE + (start + k) % UID_COUNT
        fd = os.open(os.path.join(_LOCK_DIR, str(uid)), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        # a free lock with processes left means their owner died: kill them, and use the uid once clean
        if _kill_uid(uid, settle_s=0.2) and not _uid_processes(uid):
            return uid, fd
        os.close(fd)
    raise RuntimeError(f"sandbox: all {UID_COUNT} sandbox uids from {UID_BASE} are busy")


def reap_orphans() -> int:
    """Kill processes left under sandbox uids whose owner died (their lock is free); returns how many uids.

    Called when a worker is killed mid-run: its sandbox child lives in its own session and would survive.
    """
    if os.geteuid() != 0 or not os.path.isdir(_LOCK_DIR):
        return 0
    stale = sorted({uid for uid, _ in _uids_in_range()})
    reaped = 0
    for uid in stale:
        fd = os.open(os.path.join(_LOCK_DIR, str(uid)), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a live sandbox owns it
        try:
            _kill_uid(uid)
            reaped += 1
        finally:
            os.close(fd)
    return reaped


def _uids_in_range() -> list[tuple[int, int]]:
    """(uid, pid) of every live process running under a sandbox uid."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            uid = os.stat(f"/proc/{name}").st_uid
        except OSError:
            continue
        if UID_BASE <= uid < UID_BASE + UID_COUNT:
            out.append((uid, int(name)))
    return out


def _kill_uid(uid: int, settle_s: float = 2.0) -> bool:
    """SIGKILL every live process of `uid`, again and again while a fork bomb keeps spawning.

    Returns True once none is alive. Their zombies are reaped by init a little later; a uid with zombies
    is not handed out again until they are gone (zombies still count against RLIMIT_NPROC).
    """
    end = time.monotonic() + settle_s
    while True:
        live = [pid for pid, zombie in _uid_processes(uid) if not zombie]
        if not live:
            return True
        for pid in live:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > end:
            return False
        time.sleep(0.002)


def _read_head(path: str, limit: int) -> tuple[str, bool]:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        data = f.read(limit)
    return data.decode("utf-8", errors="replace"), size > limit


def run_python(code: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `code` as a Python script under the sandbox (see module docstring) and collect its output."""
    if not isinstance(code, str):
        raise ValueError(f"sandbox code must be a string, got {type(code).__name__}")
    python = sandbox_python(limits.python_executable)
    as_root = os.geteuid() == 0
    uid, lock_fd = _acquire_uid() if as_root else (None, None)
    workdir = tempfile.mkdtemp(prefix="vagent_sbx_")
    outdir = tempfile.mkdtemp(prefix="vagent_sbx_out_")
    try:
        with open(os.path.join(workdir, "main.py"), "w") as f:
            f.write(code)
        if uid is not None:
            for p in (workdir, os.path.join(workdir, "main.py")):
                os.chown(p, uid, uid)
        os.chmod(workdir, 0o700)
        out_path, err_path = os.path.join(outdir, "stdout"), os.path.join(outdir, "stderr")

        def preexec() -> None:
            hard_cpu = limits.cpu_s + 1
            resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, hard_cpu))
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
            resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.nproc, limits.nproc))
            resource.setrlimit(resource.RLIMIT_NOFILE, (limits.nofile, limits.nofile))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            os.umask(0o077)
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)

        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
        t0 = time.monotonic()
        timed_out = False
        with open(out_path, "wb") as out_f, open(err_path, "wb") as err_f:
            proc = subprocess.Popen(
                [python, "-I", "-B", "-u", "-c", _BOOTSTRAP], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                stdout=out_f, stderr=err_f, preexec_fn=preexec, start_new_session=True, close_fds=True,
            )
            try:
                proc.wait(timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()  # reap the direct child before sweeping the uid (its zombie would count)
            if uid is not None:
                _kill_uid(uid)
        wall = time.monotonic() - t0
        stdout, trunc_out = _read_head(out_path, limits.max_output_bytes)
        stderr, trunc_err = _read_head(err_path, limits.max_output_bytes)
        rc = proc.returncode
        sig = -rc if rc is not None and rc < 0 else None
        truncated = trunc_out or trunc_err or sig == signal.SIGXFSZ
        return SandboxResult(stdout, stderr, None if sig else rc, sig, timed_out, truncated, wall)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(outdir, ignore_errors=True)
        if lock_fd is not None:
            os.close(lock_fd)


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
