"""Kernel isolation for the sandbox without helper programs: Linux namespaces set up with ctypes.

`namespace_preexec(plan)` is a Popen preexec_fn. In the forked child ("launcher", host pid namespace) it
drops to `plan.drop_to_uid` when we are root, unshares user, mount, pid, net, ipc, uts and cgroup
namespaces (the user namespace maps only our own uid, so nothing in it is root on the host), and forks:
- the launcher closes its inherited descriptors, waits, and exits with the program's wait status; on
  SIGTERM (the host's timeout) it SIGKILLs the namespace's init, and its own wait returns only once the
  kernel has killed every process in the pid namespace;
- the child is pid 1 of the new pid namespace ("init"): it builds a new root on a size-limited tmpfs
  (read-only binds of what Python needs, a few device nodes, a fresh /proc, a private /work and /tmp),
  pivots into it, forbids nested user namespaces, forks the program and reaps every process until it ends;
- the program (pid 2) returns from the preexec_fn with no_new_privs and the seccomp filter set, and
  Popen execs the interpreter; as a non-root uid of the namespace it holds no capabilities after exec.
Parent-death signals chain worker -> launcher -> init, so a killed worker takes its sandbox with it.
"""
from __future__ import annotations

import ctypes
import os
import platform
import resource
import select
import signal
import struct
from dataclasses import dataclass
from typing import Callable

from vagent_jax.envs.sandbox_seccomp import install as install_seccomp

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x2000000, 0x4000000, 0x8000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = 1024, 2048, 4096, 16384, 1 << 18, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
# statvfs f_flag bits -> mount flags a bind remount must keep (the kernel locks them in a user namespace)
_LOCKED = ((4, MS_NODEV), (8, MS_NOEXEC), (1024, MS_NOATIME), (2048, MS_NODIRATIME), (4096, MS_RELATIME))
DEVICES = ("null", "zero", "full", "random", "urandom")
NEW_ROOT = "/tmp"  # where the new root's tmpfs is mounted before pivot_root (inside our mount namespace)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


@dataclass(frozen=True)
class NamespacePlan:
    """What the namespace sandbox needs: read-only host paths, the program, tmpfs size, the uid to run as."""

    ro_paths: tuple[str, ...]
    code: bytes
    disk_bytes: int
    inodes: int = 4096
    drop_to_uid: int | None = None  # set when we are root: the host uid the sandbox runs as
    seccomp: bytes | None = None  # a seccomp filter program installed just before exec


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"sandbox namespace setup: {what}: {os.strerror(err)}")


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: None if s is None else os.fsencode(s))
    _check(_libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)), f"mount {src} on {target}")


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _locked_flags(path: str) -> int:
    f_flag = os.statvfs(path).f_flag
    return sum(ms for st, ms in _LOCKED if f_flag & st)


def _unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (a space is written \\040); no codec lookups after fork."""
    parts = field.split("\\")
    return parts[0] + "".join(chr(int(p[:3], 8)) + p[3:] for p in parts[1:])


def _mount_points_under(target: str) -> list[str]:
    """Mount points at or below `target` in our mount namespace (so submounts are made read-only too)."""
    with open("/proc/self/mountinfo") as f:
        points = [_unescape(line.split()[4]) for line in f]
    return [p for p in points if p == target or p.startswith(target.rstrip("/") + "/")]


def _bind_ro(src: str, dst: str) -> None:
    """Bind host `src` at `dst` read-only, nosuid (a symlink is recreated instead of bound)."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
        return
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.close(os.open(dst, os.O_CREAT | os.O_WRONLY, 0o644))
    _mount(src, dst, None, MS_BIND | MS_REC)
    for point in _mount_points_under(dst):
        _mount(None, point, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | _locked_flags(point))


def _build_root(plan: NamespacePlan) -> None:
    """Mount the sandbox's root on a tmpfs and pivot into it (runs as init, inside the new namespaces)."""
    root = NEW_ROOT
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, f"size={plan.disk_bytes},nr_inodes={plan.inodes},mode=755")
    for path in plan.ro_paths:
        if os.path.lexists(path) and not os.path.lexists(root + path):
            _bind_ro(path, root + path)
    os.makedirs(root + "/dev", exist_ok=True)
    for name in DEVICES:
        os.close(os.open(f"{root}/dev/{name}", os.O_CREAT | os.O_WRONLY, 0o666))
        _mount(f"/dev/{name}", f"{root}/dev/{name}", None, MS_BIND | MS_NOSUID | MS_NOEXEC)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    for d, mode in (("/dev/shm", 0o1777), ("/tmp", 0o1777), ("/work", 0o700), ("/proc", 0o555)):
        os.makedirs(root + d, exist_ok=True)
        os.chmod(root + d, mode)
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    fd = os.open(root + "/work/main.py", os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, plan.code)
    os.close(fd)
    os.mkdir(root + "/.oldroot")
    nr = _PIVOT_ROOT[platform.machine()]
    _check(_libc.syscall(nr, os.fsencode(root), os.fsencode(root + "/.oldroot")), "pivot_root")
    os.chdir("/")
    _check(_libc.umount2(b"/.oldroot", MNT_DETACH), "umount old root")
    os.rmdir("/.oldroot")
    _write("/proc/sys/user/max_user_namespaces", "0")  # no nested user namespace: no capabilities, ever


def _close_except(fds: list[int], keep: tuple[int, ...]) -> None:
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _exit_like(status: int) -> None:
    """Exit the way a process with wait status `status` ended (same exit code or same signal)."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 255)


def _launcher_wait(init_pid: int, status_r: int) -> None:
    """The launcher after the fork: wait for the namespace to end, exit with the program's status."""
    try:
        _launcher_wait_inner(init_pid, status_r)
    finally:
        os._exit(255)  # reached only when waiting failed


def _launcher_wait_inner(init_pid: int, status_r: int) -> None:
    signal.signal(signal.SIGTERM, lambda *_: os.kill(init_pid, signal.SIGKILL))
    data = b""
    while len(data) < 4:
        chunk = os.read(status_r, 4 - len(data))
        if not chunk:
            break
        data += chunk
    _, init_status = os.waitpid(init_pid, 0)  # pid 1 is reaped after every process of its namespace
    _exit_like(struct.unpack("i", data)[0] if len(data) == 4 else init_status)


def _init_main(status_w: int, fds: list[int], seccomp: bytes | None) -> None:
    """pid 1: fork the program, reap every process until it ends, report its wait status; never returns
    in init. Returns in the program, which Popen then execs."""
    pid = os.fork()
    if pid == 0:
        os.close(status_w)
        os.setsid()
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        os.chdir("/work")
        if seccomp is not None:
            install_seccomp(_libc, seccomp)
        return
    _close_except(fds, (status_w,))
    while True:
        try:
            done, status = os.wait()
        except ChildProcessError:
            os._exit(255)
        if done == pid:
            break
    os.write(status_w, struct.pack("i", status))
    os._exit(0)


def _enter_namespaces(plan: NamespacePlan) -> None:
    """Drop to the sandbox uid (as root), unshare every namespace and map only our own uid and gid."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if plan.drop_to_uid is not None:
        os.setgroups([])
        os.setresgid(plan.drop_to_uid, plan.drop_to_uid, plan.drop_to_uid)
        os.setresuid(plan.drop_to_uid, plan.drop_to_uid, plan.drop_to_uid)
        # a uid change makes us non-dumpable, and /proc/self/{uid_map,...} root's: take them back
        _check(_libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "dumpable")
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP
    _check(_libc.unshare(flags), "unshare")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")


def namespace_preexec(plan: NamespacePlan) -> Callable[[], None]:
    """A Popen preexec_fn that runs the exec'd program inside fresh namespaces (see module docstring).

    A setup failure is written to the child's stderr and raised (Popen then raises SubprocessError)."""

    def preexec() -> None:
        try:
            parent = os.getppid()
            _enter_namespaces(plan)
            _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
            if os.getppid() != parent:  # the worker died before the death signal was armed
                os._exit(1)
            fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
            status_r, status_w = os.pipe()
            alive_r, alive_w = os.pipe()
            init_pid = os.fork()
            if init_pid:
                _close_except(fds, (status_r, alive_w))
                os.close(status_w)
                os.close(alive_r)
                _launcher_wait(init_pid, status_r)
            os.close(status_r)
            os.close(alive_w)
            os.setsid()
            _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
            if select.select([alive_r], [], [], 0)[0]:  # EOF: the launcher died before the signal was armed
                os._exit(1)
            os.close(alive_r)
            _build_root(plan)
        except BaseException as e:
            os.write(2, f"sandbox setup failed: {e}\n".encode())
            raise
        _init_main(status_w, fds + [status_w], plan.seccomp)

    return preexec
