"""The sandbox without kernel isolation (only with `allow_unisolated`): rlimits, a uid drop, an audit hook.

No namespaces: the program sees the host's file system (read access as an unprivileged uid when we are
root, as ourselves otherwise) and the host's network. What holds: resource limits; when we are root a
private uid from a lock-guarded range (it cannot touch root's files or read other processes' environment,
and every process it leaves behind is found by uid and killed); a host work dir named after its owner's
pid, swept once the owner is dead. The Python audit hook (on by default here) is not a security boundary.
"""
from __future__ import annotations

import fcntl
import glob
import os
import shutil
import signal
import stat
import tempfile
import time

# a fixed place, not $TMPDIR: every pool on the machine must see the same locks
_LOCK_DIR = "/tmp/vagent_sandbox_uids"
WORKDIR_PREFIX = "vagent_sbx_"
UID_BASE = 61000
UID_COUNT = 1000


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


def acquire_uid() -> tuple[int, int]:
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



def make_workdir(code: str, uid: int | None) -> str:
    """A private host work dir holding main.py, named after our pid (so a sweep knows when it is stale)."""
    workdir = tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}_")
    with open(os.path.join(workdir, "main.py"), "w") as f:
        f.write(code)
    if uid is not None:
        for p in (workdir, os.path.join(workdir, "main.py")):
            os.chown(p, uid, uid)
    os.chmod(workdir, 0o700)
    return workdir


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_workdirs() -> int:
    """Remove work dirs whose owner process is dead (a killed worker's); returns how many."""
    removed = 0
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{WORKDIR_PREFIX}*_*")):
        owner = os.path.basename(path)[len(WORKDIR_PREFIX):].split("_", 1)[0]
        if owner.isdigit() and not _pid_alive(int(owner)):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def kill_uid_after(uid: int | None) -> None:
    """After a run: kill what it left under its uid (processes that left its session)."""
    if uid is not None:
        _kill_uid(uid)
