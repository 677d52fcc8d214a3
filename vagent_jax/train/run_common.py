"""What the training programs and every command share below the jobs layer: the run's mesh from config,
and the exception a run raises when it stops on purpose (the NaN-streak guard, a checkpoint that cannot
be written)."""
from __future__ import annotations

import jax
from jax.sharding import Mesh

from vagent_jax.sharding import MeshConfig, make_mesh


class RunStopped(RuntimeError):
    """The run stopped on purpose (too many non-finite steps); the last good checkpoint is kept."""


def run_mesh(mesh_cfg: MeshConfig, num_devices: int) -> Mesh:
    """The run's mesh over the first `num_devices` devices (0 = all), shaped by mesh_cfg."""
    devices = jax.devices()
    if num_devices < 0 or num_devices > len(devices):
        raise ValueError(f"num_devices: {num_devices} is outside [0, {len(devices)}] (devices available)")
    return make_mesh(mesh_cfg, devices[:num_devices] if num_devices else devices)
