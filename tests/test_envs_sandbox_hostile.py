"""Hostile programs against each kernel sandbox backend, with the audit hook off: the kernel stops them.

Every case shows its barrier in the run's output (tests/sandbox_hostile_cases.py), and after every run
the host is checked: the listeners got nothing, the host file is unchanged, no file appeared outside,
no process of the run is left, and a host process of the sandbox's own uid is still alive.
"""
import os
import platform
import socket
import subprocess
import uuid

import pytest

from sandbox_fixtures import BACKENDS, processes_with
from sandbox_hostile_cases import BENIGN, HOSTILE, PRELUDE
from vagent_jax.envs import sandbox
from vagent_jax.envs.sandbox import SandboxLimits, describe, run_python

LIMITS = dict(cpu_s=1, wall_s=2.0, memory_bytes=256 * 2**20, file_bytes=2**20, disk_bytes=8 * 2**20,
              max_output_bytes=4096, audit_hook=False)
_X86_ONLY = {"raw_setuid_root", "raw_reboot", "perf_event_open"}  # raw syscall numbers of x86_64


class Host:
    """Host resources that hostile programs attack, and the checks that they were not reached."""

    def __init__(self, tmp_path):
        self.token = uuid.uuid4().hex
        self.host_file = f"/tmp/vagent_hostile_{self.token}.txt"
        with open(self.host_file, "w") as f:
            f.write(self.token)
        os.chmod(self.host_file, 0o644)
        self.host_tmp_target = f"/tmp/vagent_escape_{self.token}"
        self.tcp4 = self._listen(socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1")
        self.tcp6 = self._listen(socket.AF_INET6, socket.SOCK_STREAM, "::1")
        self.udp4 = self._listen(socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1")
        self.udp6 = self._listen(socket.AF_INET6, socket.SOCK_DGRAM, "::1")
        self.unix_path = str(tmp_path / "host.sock")
        self.unix = socket.socket(socket.AF_UNIX)
        self.unix.bind(self.unix_path)
        os.chmod(self.unix_path, 0o777)
        self.unix.listen()
        self.abstract = f"vagent_{self.token}"
        self.abstract_sock = socket.socket(socket.AF_UNIX)
        self.abstract_sock.bind("\0" + self.abstract)
        self.abstract_sock.listen()
        self.fd = os.open(self.host_file, os.O_RDONLY)  # inheritable: must not reach the sandbox
        os.set_inheritable(self.fd, True)
        uid = sandbox.SANDBOX_UID if os.geteuid() == 0 else None
        self.sleeper = subprocess.Popen(["sleep", "600"], user=uid)
        for s in self._sockets():
            s.setblocking(False)

    def _listen(self, family, kind, addr):
        s = socket.socket(family, kind)
        s.bind((addr, 0))
        if kind == socket.SOCK_STREAM:
            s.listen()
        setattr(self, f"sock_{len([a for a in vars(self) if a.startswith('sock_')])}", s)
        return s.getsockname()[1]

    def _sockets(self):
        return [v for k, v in vars(self).items() if k.startswith("sock_")] + [self.unix, self.abstract_sock]

    def fill(self, code: str) -> str:
        return (PRELUDE + code).format(token=self.token, host_file=self.host_file, repo_file=os.path.abspath(
            "pyproject.toml"), host_tmp_target=self.host_tmp_target, tcp4=self.tcp4, tcp6=self.tcp6, udp4=self.udp4,
            udp6=self.udp6, unix_path=self.unix_path, abstract=self.abstract)

    def assert_untouched(self):
        for s in self._sockets():
            with pytest.raises(BlockingIOError):
                s.accept() if s.type == socket.SOCK_STREAM else s.recvfrom(100)
        assert open(self.host_file).read() == self.token
        assert not os.path.exists(self.host_tmp_target)
        assert self.sleeper.poll() is None, "a host process of the sandbox uid was killed"
        assert processes_with(self.token) == [], "a process of the run outlived it"

    def close(self):
        self.sleeper.kill()
        self.sleeper.wait()
        os.close(self.fd)
        for s in self._sockets():
            s.close()
        os.remove(self.host_file)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    h = Host(tmp_path_factory.mktemp("host"))
    old = os.environ.get("VAGENT_HOSTILE_SECRET")
    os.environ["VAGENT_HOSTILE_SECRET"] = h.token[::-1]  # in the worker's environment: must stay unreadable
    yield h
    os.environ.pop("VAGENT_HOSTILE_SECRET") if old is None else os.environ.update(VAGENT_HOSTILE_SECRET=old)
    h.close()


def test_the_hostile_set_is_large_enough():
    assert len(HOSTILE) >= 30 and len({name for name, _, _ in HOSTILE}) == len(HOSTILE)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,code,barrier", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_program_is_stopped_by_the_kernel(host, backend, name, code, barrier):
    if name in _X86_ONLY and platform.machine() != "x86_64":
        pytest.skip("raw syscall numbers are x86_64's")
    r = run_python(host.fill(code), SandboxLimits(backend=backend, **LIMITS))
    text = describe(r)
    assert r.backend == backend
    assert "ESCAPED" not in text and host.token not in text, text
    assert any(b in text for b in barrier.split("|")), text
    host.assert_untouched()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,code,expected", BENIGN, ids=[c[0] for c in BENIGN])
def test_benign_program_succeeds(backend, name, code, expected):
    r = run_python(PRELUDE + code, SandboxLimits(backend=backend, **LIMITS))
    assert expected in r.stdout + r.stderr, describe(r)
    if name != "traceback_is_shown":
        assert r.exit_code == 0, describe(r)
