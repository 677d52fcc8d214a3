"""The mesh (data, fsdp, tensor), the logical axis names and the one rules table mapping them to mesh axes.

Every parameter carries a tuple of logical names (see models/transformer.py); `logical_to_spec` turns it
into a PartitionSpec. A mesh axis that does not divide a dimension is dropped for that dimension (the
tensor stays replicated along it) so small test models still shard; `replicated_fraction` reports how much
of the weight bytes that left replicated, and `check_params_sharded` (run at start-up by `vagent sft`,
`vagent rl` and `vagent compile`, in the spirit of MaxText's assert_params_sufficiently_sharded) stops a
run whose parameters stay replicated across a parameter-sharding mesh axis beyond
`mesh.max_replicated_fraction`, naming the largest offenders.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vagent_jax.config import ConfigError, require

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis name -> mesh axes (a tuple shards over several). The only table of its kind.
LOGICAL_AXIS_RULES: dict[str, tuple[str, ...]] = {
    "batch": ("data", "fsdp"),
    "vocab": ("tensor",),
    "embed": ("fsdp",),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "head_dim": (),
    "mlp": ("tensor",),
    "norm": (),
    "layers": (),
    "seq": (),
    "cache_seq": (),
}
# Mesh axes that shard parameters (every rule but the batch's): a weight left whole along one of them is a
# copy per device that the mesh was sized to avoid. The data axis replicates parameters by design.
PARAM_MESH_AXES = tuple(a for a in MESH_AXES
                        if any(a in axes for name, axes in LOGICAL_AXIS_RULES.items() if name != "batch"))


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh shape; -1 in one axis takes the remaining devices."""

    data: int = 1
    fsdp: int = -1
    tensor: int = 1
    # Start-up check: the largest fraction of parameter bytes that may stay replicated across fsdp or tensor
    # (each of size > 1); beyond it the run stops naming the weights (check_params_sharded). 1.0 turns it off.
    max_replicated_fraction: float = 0.05

    def validate(self) -> None:
        """Exactly one axis may be -1; the others positive; the replicated fraction in [0, 1]."""
        sizes = (self.data, self.fsdp, self.tensor)
        require(sum(s == -1 for s in sizes) <= 1, "mesh", f"at most one axis may be -1, got {sizes}")
        for name, s in zip(MESH_AXES, sizes):
            require(s == -1 or s > 0, name, f"must be positive or -1, got {s}")
        require(0.0 <= self.max_replicated_fraction <= 1.0, "max_replicated_fraction",
                f"must be in [0, 1], got {self.max_replicated_fraction}")

    def shape(self, n_devices: int) -> tuple[int, int, int]:
        """Resolve -1 against the device count; error naming the mesh when it does not divide."""
        sizes = [self.data, self.fsdp, self.tensor]
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            require(n_devices % known == 0, "mesh",
                    f"axes {dict(zip(MESH_AXES, sizes))} do not divide {n_devices} devices")
            sizes[sizes.index(-1)] = n_devices // known
        require(math.prod(sizes) == n_devices, "mesh",
                f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, have {n_devices}")
        return tuple(sizes)  # type: ignore[return-value]


def make_mesh(cfg: MeshConfig = MeshConfig(), devices: Sequence[Any] | None = None) -> Mesh:
    """Build the (data, fsdp, tensor) mesh over `devices` (default: all devices)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = cfg.shape(len(devices))
    return Mesh(np.asarray(devices, dtype=object).reshape(shape), MESH_AXES)


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """PartitionSpec for a tensor with logical axis `names`; axes that do not divide are dropped."""
    used: set[str] = set()
    out = []
    for name, dim in zip(names, shape):
        axes = []
        size = 1
        for ax in LOGICAL_AXIS_RULES.get(name, ()) if name else ():
            n = mesh.shape[ax]
            if ax in used or n == 1 or dim % (size * n) != 0:
                continue
            axes.append(ax)
            size *= n
        used.update(axes)
        out.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    return PartitionSpec(*out)


def tree_shardings(axes_tree: Any, shapes_tree: Any, mesh: Mesh) -> Any:
    """NamedShardings for a pytree given matching trees of logical names and of shapes/arrays."""
    return jax.tree.map(
        lambda names, x: NamedSharding(mesh, logical_to_spec(names, x.shape, mesh)),
        axes_tree, shapes_tree, is_leaf=lambda n: isinstance(n, tuple))


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Shard the leading (batch) axis over data and fsdp, the rest replicated."""
    axes = tuple(a for a in LOGICAL_AXIS_RULES["batch"] if mesh.shape[a] > 1)
    lead = axes if len(axes) > 1 else (axes[0] if axes else None)
    return NamedSharding(mesh, PartitionSpec(lead, *([None] * (ndim - 1))))


def replicated_fraction(shardings: Any, shapes: Any, min_bytes: int = 0) -> float:
    """Fraction of parameter bytes (of tensors >= min_bytes) that no mesh axis shards."""
    total = rep = 0
    for s, x in zip(jax.tree.leaves(shardings), jax.tree.leaves(shapes)):
        nbytes = math.prod(x.shape) * np.dtype(x.dtype).itemsize
        if nbytes < min_bytes:
            continue
        total += nbytes
        if all(p is None for p in s.spec):
            rep += nbytes
    return rep / max(total, 1)


def _nbytes(x: Any) -> int:
    return math.prod(x.shape) * np.dtype(x.dtype).itemsize


def _spec_axes(spec: PartitionSpec) -> set[str]:
    """Mesh axes a PartitionSpec shards over."""
    out: set[str] = set()
    for p in spec:
        out.update(p if isinstance(p, tuple) else (p,) if p is not None else ())
    return out


def check_params_sharded(params: Any, mesh: Mesh, max_replicated_fraction: float, top: int = 5) -> dict[str, float]:
    """Stop (ConfigError naming the largest offenders) when more than `max_replicated_fraction` of the
    parameter bytes stays replicated across a parameter-sharding mesh axis (fsdp, tensor) of size > 1.

    params: a tree of jax.Arrays or ShapeDtypeStructs carrying NamedShardings (abstract at start-up, so the
    check runs before anything is allocated). Returns {axis: replicated fraction} for the checked axes."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    total = sum(_nbytes(x) for _, x in leaves) or 1
    out: dict[str, float] = {}
    for axis in PARAM_MESH_AXES:
        if mesh.shape[axis] == 1:
            continue
        whole = [(path, x) for path, x in leaves if axis not in _spec_axes(x.sharding.spec)]
        frac = sum(_nbytes(x) for _, x in whole) / total
        out[axis] = frac
        if frac > max_replicated_fraction:
            worst = sorted(whole, key=lambda px: -_nbytes(px[1]))[:top]
            names = ", ".join(f"{jax.tree_util.keystr(p)} {list(x.shape)} ({_nbytes(x) / 2**20:.2f} MiB, spec "
                              f"{tuple(x.sharding.spec)})" for p, x in worst)
            raise ConfigError(
                f"config key 'mesh.max_replicated_fraction': {100 * frac:.1f}% of the parameter bytes stay "
                f"replicated across mesh axis '{axis}' (size {mesh.shape[axis]}), above "
                f"{100 * max_replicated_fraction:.1f}%; largest: {names}. Pick mesh sizes that divide these "
                f"dimensions (e.g. tensor <= n_kv_heads), or raise mesh.max_replicated_fraction")
    return out
