"""TPU slice names -> topologies libtpu can compile for, and the per-chip numbers a fit check needs.

Naming convention (Cloud TPU's): in a slice name `<gen>-<N>` the number N counts TensorCores for the
two-core megacore generations (v4, v5p: 2 cores per chip, so v5p-64 = 32 chips) and chips for the
one-core ones (v5e, v6e: v5e-32 = 32 chips). A slice name maps to the physical chip grid
get_topology_desc takes (v5p-64 -> "v5p:2x4x4", v5e-32 -> "v5e:4x8"); a grid may also be given
directly ("v5e:2x2", "v5p:4x4x8"). One JAX device is one chip (v4 is opened as megacore).
Chip numbers (HBM per chip, peak dense bf16 FLOP/s, HBM bandwidth) are the published ones.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any

from vagent_jax.config import ConfigError

GiB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class ChipSpec:
    """One TPU generation: HBM bytes per chip, peak bf16 FLOP/s and HBM bytes/s per chip."""

    generation: str
    hbm_bytes: int
    peak_flops: float
    hbm_bandwidth: float
    cores_per_chip: int  # TensorCores counted by the slice name's number
    grid_dims: int  # 2 (v5e, v6e torus) or 3 (v4, v5p)


CHIPS: dict[str, ChipSpec] = {
    "v4": ChipSpec("v4", 32 * GiB, 275e12, 1200e9, 2, 3),
    "v5e": ChipSpec("v5e", 16 * GiB, 197e12, 819e9, 1, 2),
    "v5p": ChipSpec("v5p", 95 * GiB, 459e12, 2765e9, 2, 3),
    "v6e": ChipSpec("v6e", 32 * GiB, 918e12, 1640e9, 1, 2),
}

# chips -> the standard slice grid (Cloud TPU's shapes for each slice size).
_GRIDS_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16), 256: (16, 16)}
_GRIDS_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4), 128: (4, 4, 8),
             256: (4, 8, 8), 512: (8, 8, 8), 1024: (8, 8, 16), 2048: (8, 16, 16), 4096: (16, 16, 16)}


@dataclasses.dataclass(frozen=True)
class Topology:
    """A resolved slice: the name given, its chip spec, the chip grid and the libtpu topology string."""

    name: str
    chip: ChipSpec
    grid: tuple[int, ...]

    @property
    def num_chips(self) -> int:
        """Chips (= JAX devices) in the slice."""
        return math.prod(self.grid)

    @property
    def topology_name(self) -> str:
        """The string get_topology_desc accepts, e.g. 'v5p:2x4x4'."""
        return f"{self.chip.generation}:{'x'.join(map(str, self.grid))}"


def _known() -> str:
    """The accepted slice names, e.g. 'v5p-{8,16,...}', for error messages."""
    parts = []
    for g, c in CHIPS.items():
        grids = _GRIDS_3D if c.grid_dims == 3 else _GRIDS_2D
        parts.append(f"{g}-{{{','.join(str(n * c.cores_per_chip) for n in grids)}}}")
    sizes = ", ".join(parts)
    return f"slice names {sizes}, or a chip grid such as v5e:2x2 / v5p:4x4x8"


def parse_topology(name: str) -> Topology:
    """Resolve 'v5p-64' (slice name) or 'v5p:2x4x4' (chip grid); an unknown name is a ConfigError
    naming --topology and listing what is accepted."""
    text = name.strip().lower()
    grid_m = re.fullmatch(r"(v4|v5e|v5p|v6e):(\d+(?:x\d+){1,2})", text)
    slice_m = re.fullmatch(r"(v4|v5e|v5p|v6e)-(\d+)", text)
    if grid_m:
        chip = CHIPS[grid_m.group(1)]
        grid = tuple(int(x) for x in grid_m.group(2).split("x"))
        if len(grid) != chip.grid_dims or min(grid) < 1:
            raise ConfigError(f"--topology {name!r}: a {chip.generation} chip grid has {chip.grid_dims} "
                              f"positive dimensions")
        return Topology(name, chip, grid)
    if slice_m:
        chip = CHIPS[slice_m.group(1)]
        cores = int(slice_m.group(2))
        grids = _GRIDS_3D if chip.grid_dims == 3 else _GRIDS_2D
        if cores % chip.cores_per_chip == 0 and cores // chip.cores_per_chip in grids:
            return Topology(name, chip, grids[cores // chip.cores_per_chip])
    raise ConfigError(f"--topology {name!r} is not a known TPU slice; accepted: {_known()}")


def topology_devices(topo: Topology) -> list[Any]:
    """The slice's devices from libtpu's topology description (compile-only; no TPU needed).

    Sets ALLOW_MULTIPLE_LIBTPU_LOAD so concurrent compile-only processes do not fight over libtpu's lock.
    """
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies

    host = tuple(min(g, 2) for g in topo.grid) + (1,) * (3 - len(topo.grid))
    desc = topologies.get_topology_desc(
        platform="tpu", topology_name=topo.topology_name,
        chip_config_name="megacore" if topo.chip.generation == "v4" else "default",
        chips_per_host_bounds=host, num_slices=1)
    devices = list(desc.devices)
    if len(devices) != topo.num_chips:
        raise RuntimeError(f"libtpu gave {len(devices)} devices for {topo.topology_name}, expected {topo.num_chips}")
    return devices
