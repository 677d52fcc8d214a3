"""A seccomp filter for sandboxed programs: syscalls no Python program needs fail with EPERM.

The namespaces already take the capabilities these syscalls need; the filter removes their kernel code
from the reach of the program (mount API, namespaces, ptrace and cross-process memory, modules, kexec,
BPF, perf, userfaultfd, keyrings, io_uring, file handles, clocks, swap, reboot), so a bug there is no
escape. A foreign architecture (the x32 ABI, a 32-bit entry) is refused too. Installed by the
namespace backend before exec (with no_new_privs) and handed to bwrap with --seccomp.
"""
from __future__ import annotations

import ctypes
import errno
import platform
import struct

# the syscalls refused, by number (checked against the kernel headers by tests/test_envs_sandbox_seccomp.py)
SYSCALLS = {
    "x86_64": dict(mount=165, umount2=166, pivot_root=155, chroot=161, unshare=272, setns=308, ptrace=101,
                   process_vm_readv=310, process_vm_writev=311, kexec_load=246, kexec_file_load=320,
                   init_module=175, finit_module=313, delete_module=176, reboot=169, swapon=167, swapoff=168,
                   bpf=321, perf_event_open=298, userfaultfd=323, keyctl=250, add_key=248, request_key=249,
                   io_uring_setup=425, io_uring_enter=426, io_uring_register=427, open_by_handle_at=304,
                   name_to_handle_at=303, fsopen=430, fsconfig=431, fsmount=432, fspick=433, move_mount=429,
                   open_tree=428, mount_setattr=442, syslog=103, acct=163, quotactl=179, settimeofday=164,
                   clock_settime=227, adjtimex=159, vhangup=153, iopl=172, ioperm=173, uselib=134),
    "aarch64": dict(mount=40, umount2=39, pivot_root=41, chroot=51, unshare=97, setns=268, ptrace=117,
                    process_vm_readv=270, process_vm_writev=271, kexec_load=104, kexec_file_load=294,
                    init_module=105, finit_module=273, delete_module=106, reboot=142, swapon=224, swapoff=225,
                    bpf=280, perf_event_open=241, userfaultfd=282, keyctl=219, add_key=217, request_key=218,
                    io_uring_setup=425, io_uring_enter=426, io_uring_register=427, open_by_handle_at=265,
                    name_to_handle_at=264, fsopen=430, fsconfig=431, fsmount=432, fspick=433, move_mount=429,
                    open_tree=428, mount_setattr=442, syslog=116, acct=89, quotactl=60, settimeofday=170,
                    clock_settime=112, adjtimex=171, vhangup=58),
}
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_X32_BIT = 0x40000000
_LD_ABS_W, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_RET_ALLOW, _RET_ERRNO, _RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2


def filter_program(machine: str | None = None) -> bytes:
    """The classic-BPF seccomp program (struct sock_filter[]) for `machine` (default: this one)."""
    machine = machine or platform.machine()
    if machine not in SYSCALLS:
        raise RuntimeError(f"sandbox seccomp: no syscall table for architecture {machine!r}")
    numbers = SYSCALLS[machine]
    deny = (_RET_K, 0, 0, _RET_ERRNO | errno.EPERM)
    prog = [(_LD_ABS_W, 0, 0, 4), (_JEQ_K, 1, 0, _AUDIT_ARCH[machine]), (_RET_K, 0, 0, _RET_KILL_PROCESS),
            (_LD_ABS_W, 0, 0, 0)]
    if machine == "x86_64":
        prog += [(_JGE_K, 0, 1, _X32_BIT), deny]
    for name in sorted(numbers):
        prog += [(_JEQ_K, 0, 1, numbers[name]), deny]
    prog.append((_RET_K, 0, 0, _RET_ALLOW))
    return b"".join(struct.pack("HBBI", *ins) for ins in prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(libc: ctypes.CDLL, program: bytes) -> None:
    """Install `program` on the calling thread (no_new_privs must be set); raises OSError on failure."""
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"sandbox seccomp: {errno.errorcode.get(err, err)}")
