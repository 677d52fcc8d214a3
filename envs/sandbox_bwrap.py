"""Kernel isolation for the sandbox through bubblewrap (`bwrap`), when it is installed.

bwrap builds the same kind of sandbox as sandbox_ns (new user, mount, pid, net, ipc, uts and cgroup
namespaces; read-only binds of what Python needs; a fresh /proc and a minimal /dev; private size-limited
tmpfs /work and /tmp; everything else read-only), forbids nested user namespaces, and kills the sandbox when
its parent dies. Run as root, the caller first drops to an unprivileged uid (Popen user=/group=), so bwrap
runs unprivileged and nothing in the sandbox is root on the host.
"""
from __future__ import annotations

import json
import os
import shutil

WORK = "/work"


def bwrap_path() -> str | None:
    """The bwrap executable, or None when it is not installed."""
    return shutil.which("bwrap")


def bwrap_argv(bwrap: str, ro_paths: tuple[str, ...], disk_bytes: int, code_fd: int, info_fd: int,
               seccomp_fd: int) -> list[str]:
    """bwrap's options (the program's argv follows them): `code_fd` holds main.py, `seccomp_fd` the filter
    program, `info_fd` gets the pids."""
    argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session"]
    for path in ro_paths:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    for tmp in (WORK, "/tmp"):
        argv += ["--size", str(disk_bytes), "--perms", "0700" if tmp == WORK else "1777", "--tmpfs", tmp]
    argv += ["--file", str(code_fd), f"{WORK}/main.py", "--chdir", WORK, "--unsetenv", "PWD", "--remount-ro", "/",
             "--seccomp", str(seccomp_fd), "--info-fd", str(info_fd), "--"]
    return argv


def sandbox_init_pid(info: bytes) -> int | None:
    """Host pid of the sandbox's pid 1 from bwrap's --info-fd JSON (None when bwrap wrote none yet)."""
    try:
        return int(json.loads(info.decode())["child-pid"])
    except (ValueError, KeyError, TypeError):
        return None
