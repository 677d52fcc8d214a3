"""Host <-> device moves of the decode engine, for one device, one process on a mesh, or many processes.

Multi-process (`collective`): the slot state is one global array sharded over every host's devices, so
each host owns the slots whose rows live on its devices (`own_slots`) and decodes them with the globally
sharded parameters. Every program call is collective: all hosts make the same calls with the same host
inputs, in the same order. The engine therefore exchanges each step's admissions (`exchange`, an
all-gather of small Python objects) so every host builds the same prefill batches, reads the [B] slot
vectors it needs to pick a program (`get`, all-gathered), and reads token rows only of its own slots from
its addressable shards (`get_rows`, `row`: no collective, so a host may finish a trajectory on its own).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


class HostIO:
    """How the engine puts host values on its devices and reads state back (see the module docstring)."""

    def __init__(self, mesh: Mesh | None, slot_sharding: NamedSharding | None, batch_slots: int):
        self.mesh = mesh
        self.collective = mesh is not None and jax.process_count() > 1
        self.replicated = NamedSharding(mesh, PartitionSpec()) if mesh is not None else None
        mine = range(batch_slots)
        if self.collective and slot_sharding is not None:
            me = jax.process_index()
            owned = {i for d, idx in slot_sharding.devices_indices_map((batch_slots,)).items()
                     if d.process_index == me for i in range(batch_slots)[idx[0]]}
            mine = sorted(owned)
        self.own_slots: list[int] = list(mine)
        if self.collective:
            self._wrap = jax.jit(jax.random.wrap_key_data, out_shardings=self.replicated)

    def put(self, x: Any) -> Any:
        """A host value (numpy / jax array / pytree of them) on the devices, replicated where there is a mesh."""
        if self.mesh is None:
            return jax.tree.map(jnp.asarray, x)
        if not self.collective:
            return jax.device_put(x, self.replicated)

        def one(v: Any) -> jax.Array:
            host = np.asarray(v)
            return jax.make_array_from_callback(host.shape, self.replicated, lambda idx: host[idx])

        return jax.tree.map(one, x)

    def put_key(self, seed: int) -> jax.Array:
        """A typed PRNG key from `seed`, replicated (the same on every host)."""
        key = jax.random.key(seed)
        if not self.collective:
            return self.put(key)
        return self._wrap(self.put(np.asarray(jax.random.key_data(key))))

    def get(self, xs: Any) -> Any:
        """Numpy copies of whole arrays (all-gathered across hosts when they span several: collective)."""
        if not self.collective:
            return jax.device_get(xs)
        from jax.experimental import multihost_utils

        return jax.tree.map(lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), xs)

    def get_rows(self, x: jax.Array) -> np.ndarray:
        """A numpy copy of x [B, ...] whose own-slot rows are filled (all rows when single-process)."""
        if not self.collective:
            return np.asarray(jax.device_get(x))
        out = np.zeros(x.shape, x.dtype)
        for s in x.addressable_shards:
            out[s.index] = np.asarray(s.data)
        return out

    def row(self, x: jax.Array, slot: int) -> np.ndarray:
        """Row `slot` of x [B, ...] from this host's addressable shards (slot must be one of own_slots)."""
        for s in x.addressable_shards:
            rows = range(x.shape[0])[s.index[0]]
            if slot in rows:
                return np.asarray(s.data)[slot - rows.start]
        raise ValueError(f"slot {slot} is not held by process {jax.process_index()}")

    def exchange(self, obj: Any) -> list[Any]:
        """[obj of process 0, obj of process 1, ...] (collective); [obj] single-process."""
        if not self.collective:
            return [obj]
        from vagent_jax.train.multihost import allgather_objects

        return allgather_objects(obj)
