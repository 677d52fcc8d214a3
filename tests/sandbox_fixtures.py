"""Shared sandbox test helpers: the kernel backends this machine has, and processes found by a marker."""
import os

import pytest

from vagent_jax.envs import sandbox


def kernel_backends() -> list:
    """The kernel backends as pytest params, each skipped with the reason where it does not work here."""
    python = sandbox.sandbox_python()
    out = []
    for b in ("bwrap", "namespaces"):
        why = sandbox.probe(b, python)
        out.append(pytest.param(b, marks=pytest.mark.skipif(why is not None, reason=f"{b} unavailable: {why}")))
    return out


BACKENDS = kernel_backends()


def processes_with(token: str) -> list[int]:
    """Pids of the processes whose command line holds `token`."""
    out = []
    for p in os.listdir("/proc"):
        try:
            if p.isdigit() and token.encode() in open(f"/proc/{p}/cmdline", "rb").read():
                out.append(int(p))
        except OSError:
            pass
    return out
