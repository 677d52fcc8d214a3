"""The CLI pins jax to the CPU where libtpu is installed but no TPU (nor GPU) is: jax's TPU probe then stays
silent instead of printing host-bounds errors on every command (the test extra installs libtpu)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from vagent_jax.train.multihost import TPU_VM_ENV, cpu_instead_of_absent_tpu, on_tpu_vm

# A stand-in `vagent export` that only starts jax's backends, run through the real cli.main.
_CLI = """
import sys
import jax
from vagent_jax import cli
def touch_devices(args):
    print("backend", jax.default_backend(), len(jax.devices()))
    return 0
cli._export = touch_devices
sys.exit(cli.main(["export", "run", "out"]))
"""
_BARE = "import jax; print('backend', jax.default_backend(), len(jax.devices()))"


def _no_tpu_env() -> dict[str, str]:
    drop = {"JAX_PLATFORMS", "XLA_FLAGS", *TPU_VM_ENV}
    return {k: v for k, v in os.environ.items() if k not in drop}


def test_the_choice_leaves_explicit_platforms_tpu_vms_and_gpu_machines_alone() -> None:
    if not on_tpu_vm({}):  # no TPU chips on this host's bus
        assert cpu_instead_of_absent_tpu({}, gpu_plugins=[])
    assert not cpu_instead_of_absent_tpu({"JAX_PLATFORMS": "tpu"}, gpu_plugins=[])
    assert not cpu_instead_of_absent_tpu({"TPU_WORKER_ID": "0"}, gpu_plugins=[])
    assert not cpu_instead_of_absent_tpu({}, gpu_plugins=["xla_cuda12"])


def test_cli_starts_jax_without_the_tpu_probe_noise() -> None:
    if on_tpu_vm(_no_tpu_env()):
        pytest.skip("a TPU host: the TPU is the platform to use")
    r = subprocess.run([sys.executable, "-c", _CLI], env=_no_tpu_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "backend cpu" in r.stdout, r.stdout + r.stderr
    assert "TPU" not in r.stderr, r.stderr
    if importlib.util.find_spec("libtpu") is not None:  # the control: jax alone probes the absent TPU loudly
        bare = subprocess.run([sys.executable, "-c", _BARE], env=_no_tpu_env(), capture_output=True, text=True,
                              timeout=300)
        assert "TPU" in bare.stderr, bare.stderr
