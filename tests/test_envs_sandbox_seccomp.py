"""The sandbox's seccomp filter: syscall numbers match the kernel headers, and the program is well formed."""
import os
import re
import struct

import pytest

from vagent_jax.envs import sandbox_seccomp
from vagent_jax.envs.sandbox_seccomp import SYSCALLS, filter_program

_HEADERS = {"x86_64": "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
            "aarch64": "/usr/include/asm-generic/unistd.h"}


@pytest.mark.parametrize("machine", sorted(SYSCALLS))
def test_syscall_numbers_match_the_kernel_headers(machine):
    if not os.path.exists(_HEADERS[machine]):
        pytest.skip(f"no kernel headers for {machine} here ({_HEADERS[machine]})")
    defined = {n: int(v) for n, v in re.findall(r"#define __NR(?:3264)?_(\w+)\s+(\d+)", open(_HEADERS[machine]).read())}
    for name, nr in SYSCALLS[machine].items():
        assert defined.get(name) == nr, (machine, name, nr, defined.get(name))


def test_both_architectures_refuse_the_same_core_set():
    assert set(SYSCALLS["aarch64"]) <= set(SYSCALLS["x86_64"])
    assert set(SYSCALLS["x86_64"]) - set(SYSCALLS["aarch64"]) == {"iopl", "ioperm", "uselib"}  # x86 only


@pytest.mark.parametrize("machine", sorted(SYSCALLS))
def test_filter_checks_the_architecture_then_denies_each_number(machine):
    prog = [struct.unpack("HBBI", filter_program(machine)[i:i + 8]) for i in range(0, len(filter_program(machine)), 8)]
    assert prog[0] == (0x20, 0, 0, 4) and prog[2][3] == sandbox_seccomp._RET_KILL_PROCESS  # foreign arch: killed
    assert prog[-1] == (0x06, 0, 0, sandbox_seccomp._RET_ALLOW)
    denied = {k for code, jt, jf, k in prog[4:] if code == 0x15}
    assert denied == set(SYSCALLS[machine].values())
    with pytest.raises(RuntimeError, match="architecture"):
        filter_program("sparc")
