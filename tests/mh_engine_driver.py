"""One process of the 2-process decode engine test (tests/test_sampling_engine_multihost.py).

Usage: python mh_engine_driver.py COORDINATOR NUM_PROCESSES PROCESS_ID OUT_JSON
Every process builds the same globally sharded params (fsdp 2 x tensor 2 over both hosts' devices) and one
global engine, submits its own half of the prompts (seeded by global index), steps with sync_step until no
host is alive (each trajectory: a first turn, an observation, a second turn) and writes its trajectories
and the bytes its devices hold of params + cache.
"""
from __future__ import annotations

import json
import sys

import jax

from vagent_jax.engine import DecodeEngine
from vagent_jax.sharding import MeshConfig, make_mesh
from vagent_jax.train.multihost import DistributedConfig, initialize
from vagent_jax.train.train_state import param_shardings

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from mh_engine_case import CFG, ENGINE, handle_turns, init_params, prompts  # noqa: E402


def main(coordinator: str, n: int, pid: int, out: str) -> None:
    initialize(DistributedConfig(coordinator, n, pid))
    mesh = make_mesh(MeshConfig(fsdp=2, tensor=2))
    params = jax.jit(lambda k: init_params(CFG, k), out_shardings=param_shardings(CFG, mesh))(jax.random.key(0))
    engine = DecodeEngine(params, CFG, ENGINE, (), mesh=mesh)
    engine.reset(seed=7)
    every = prompts()
    mine = {i: p for i, p in enumerate(every) if i % n == pid}
    for i, p in mine.items():
        engine.submit(i, p, seed=i)
    live, turns, done = set(mine), {i: 0 for i in mine}, {}
    while True:
        ended, anyone = engine.sync_step(bool(live))
        if not anyone:
            break
        live.difference_update(handle_turns(engine, ended, turns, done))
    held = {}
    for x in jax.tree.leaves((params, engine.state.cache)):
        for s in x.addressable_shards:
            held[str(s.device)] = held.get(str(s.device), 0) + s.data.nbytes
    with open(out, "w") as f:
        json.dump({"done": done, "own_slots": engine._io.own_slots, "held": held}, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
