"""scripts/bench_forward.py: the --quick --json run (shapes, peak, FLOPs as the AOT report counts them), the
FLOP counting by hand and the --configs check."""
import json
import os
import pathlib
import subprocess
import sys

import pytest
from script_module import load_script

from vagent_jax.aot_report import decode_model_flops, logprob_model_flops
from vagent_jax.models.config import PRESETS

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "bench_forward.py"


def test_quick_json_run_counts_shapes_and_flops():
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
    assert [(r["batch"], r["seq"], r["ctx"]) for r in rows] == [(2, 32, 32), (2, 32, 32), (4, 1, 32)]
    for r in rows:
        assert r["best_s"] <= r["median_s"], r["phase"]
    # FLOPs against the AOT report's independent count (forward: it takes T^2/2 causal pairs, here T(T+1)/2)
    cfg = PRESETS["4m"]
    assert rows[0]["flops_per_call"] == rows[1]["flops_per_call"]
    assert rows[0]["flops_per_call"] == pytest.approx(logprob_model_flops(cfg, 2, 32), rel=0.02)
    assert rows[2]["flops_per_call"] == decode_model_flops(cfg, 4, 32, 1)


def test_flop_counts_match_hand_arithmetic():
    bf = load_script("bench_forward")
    cfg = PRESETS["4m"]
    # 3 causal tokens: pairs (0,0) (1,0) (1,1) (2,0) (2,1) (2,2) = 6 per row.
    assert bf.causal_pairs(batch=2, seq=3) == 12
    # 4 layers * 8 heads * 32 head_dim * 4 FLOPs = 4096 per (query, key) pair.
    assert bf.attention_flops(cfg, pairs=1) == 4096.0
    assert bf.dense_flops(cfg, tokens=10) == 20.0 * cfg.num_non_embedding_params


def test_unknown_config_is_rejected_naming_the_flag():
    bf = load_script("bench_forward")
    with pytest.raises(ValueError, match="--configs: unknown preset 'nope'"):
        bf.parse_configs("4m,nope")
    assert bf.parse_configs(" 4m , 100m ") == ["4m", "100m"]
