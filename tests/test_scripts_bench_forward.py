"""scripts/bench_forward.py: the --quick --json smoke run, the FLOP counting and the --configs check."""
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest
from script_module import load_script

from vagent_jax.models.config import PRESETS

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "bench_forward.py"


def test_quick_json_run_reports_positive_numbers():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # the script measures the real single CPU device, not 8 fake ones
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", "--configs", "4m"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["peak_flops"] > 1e8  # any machine that runs jax does 0.1 GFLOP/s
    assert out["peak_gflops"] == pytest.approx(max(out["peak_gflops_samples"]))
    assert len(out["peak_gflops_samples"]) == 2
    assert out["num_params"] == {"4m": PRESETS["4m"].num_params}
    rows = out["rows"]
    assert [(r["config"], r["phase"]) for r in rows] == [
        ("4m", "forward"), ("4m", "prefill"), ("4m", "decode")]
    for r in rows:
        for key in ("batch", "seq", "ctx", "best_s", "median_s", "tokens_per_s", "gflops_per_s", "mfu"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["phase"], key, r[key])
        assert r["best_s"] <= r["median_s"]
        tokens = r["batch"] * r["seq"]
        assert r["tokens_per_s"] == pytest.approx(tokens / r["best_s"])
        assert r["mfu"] == pytest.approx(r["flops_per_call"] / r["best_s"] / out["peak_flops"])
    assert rows[2]["seq"] == 1 and rows[2]["batch"] == 4


def test_flop_counts_match_hand_arithmetic():
    bf = load_script("bench_forward")
    cfg = PRESETS["4m"]
    # 3 causal tokens: pairs (0,0) (1,0) (1,1) (2,0) (2,1) (2,2) = 6 per row.
    assert bf.causal_pairs(batch=2, seq=3) == 12
    # 4 layers * 8 heads * 32 head_dim * 4 FLOPs = 4096 per (query, key) pair.
    assert bf.attention_flops(cfg, pairs=1) == 4096.0
    assert bf.dense_flops(cfg, tokens=10) == 20.0 * cfg.num_non_embedding_params


def test_random_params_match_init_shapes():
    import jax
    from vagent_jax.models.transformer import init_params

    bf = load_script("bench_forward")
    cfg = PRESETS["4m"]
    params = bf.random_params(cfg, seed=0)
    want = jax.eval_shape(lambda k: init_params(cfg, k), jax.random.key(0))
    def spec(tree):
        return jax.tree.map(lambda a: (a.shape, a.dtype), tree)

    assert spec(params) == spec(want)
    assert float(params["final_norm"].min()) == 1.0
    assert 0.015 < float(params["layers"]["w_up"].std()) < 0.025


def test_unknown_config_is_rejected_naming_the_flag():
    bf = load_script("bench_forward")
    with pytest.raises(ValueError, match="--configs: unknown preset 'nope'"):
        bf.parse_configs("4m,nope")
    assert bf.parse_configs(" 4m , 100m ") == ["4m", "100m"]
