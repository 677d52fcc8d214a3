"""One decode engine over 2 processes x 2 CPU devices (jax.distributed on loopback, gloo): each host owns
the slots on its devices, decodes its own prompts (a first turn, an observation, a second turn) with the
globally sharded params, and every trajectory equals the 1-device engine's; each device holds about a
quarter of params + cache."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax

from mh_engine_case import CFG, ENGINE, handle_turns, init_params, prompts
from test_train_multihost import ROOT, TESTS, _env, _free_port, wait_all
from vagent_jax.engine import DecodeEngine

TIMEOUT = 240


def _one_device_reference() -> dict[int, dict]:
    params = init_params(CFG, jax.random.key(0))
    eng = DecodeEngine(params, CFG, ENGINE, (), seed=7)
    every = prompts()
    for i, p in enumerate(every):
        eng.submit(i, p, seed=i)
    turns, done = {i: 0 for i in range(len(every))}, {}
    while len(done) < len(every):
        handle_turns(eng, eng.step(), turns, done)
    return done


def test_two_hosts_decode_their_own_rows_like_one_device(tmp_path: Path) -> None:
    port = _free_port()
    outs = [tmp_path / f"p{i}.json" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, str(TESTS / "mh_engine_driver.py"), f"127.0.0.1:{port}", "2", str(i),
                               str(outs[i])], env=_env(2), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    for i, done in enumerate(wait_all(procs, TIMEOUT)):
        assert done.returncode == 0, f"process {i} failed:\n{done.stderr[-4000:]}"
    res = [json.loads(o.read_text()) for o in outs]
    assert res[0]["own_slots"] == [0, 1, 2, 3] and res[1]["own_slots"] == [4, 5, 6, 7]
    got = {int(k): v for r in res for k, v in r["done"].items()}
    assert sorted(int(k) for k in res[1]["done"]) == [1, 3, 5, 7, 9]  # each host finished its own prompts
    want = _one_device_reference()
    assert got == want
    assert all(v["gen_mask"].count(True) == 2 * ENGINE.max_new_tokens for v in want.values())  # two turns each
    params = init_params(CFG, jax.random.key(0))
    cache = 2 * CFG.n_layers * ENGINE.batch_slots * CFG.n_kv_heads * CFG.head_dim * ENGINE.max_len * 4
    total = sum(x.nbytes for x in jax.tree.leaves(params)) + cache
    norms = sum(x.nbytes for path, x in jax.tree_util.tree_leaves_with_path(params)
                if "norm" in jax.tree_util.keystr(path))
    held = [b for r in res for b in r["held"].values()]
    assert len(held) == 4 and max(held) <= 1.25 * total / 4 + norms, (held, total / 4)
