"""scripts/bench_train.py: the --quick --json run counts the quick shapes' tokens and FLOPs as the AOT report
does, and its MFU lies in (0, 1]."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from vagent_jax.aot_report import train_model_flops
from vagent_jax.models.config import ModelConfig

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "bench_train.py"


def test_quick_json_run() -> None:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--compare-scan", "--json"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    quick = ModelConfig(vocab_size=256, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64,
                        max_seq_len=128)
    assert out["preset"] == "quick" and out["params"] == quick.num_params
    sft, rl = out["sft"], out["rl"]
    # FLOPs against the AOT report's independent count (it takes T^2/2 causal pairs, the script T(T+1)/2)
    assert sft["flops_per_step"] == pytest.approx(train_model_flops(quick, 2, 32), rel=0.02)
    assert rl["update_flops_per_s"] * rl["update_s"] == pytest.approx(train_model_flops(quick, 8, 16), rel=0.04)
    # token bookkeeping of the quick shapes: SFT 2 x 32 tokens per step, RL 8 rollouts x 8 generated tokens
    assert sft["tokens_per_s"] * sft["step_s"] == pytest.approx(2 * 32)
    assert rl["rollout_tokens_per_s"] * rl["rollout_s"] == pytest.approx(8 * 8)
    # MFU against the peak measured in the same run: a FLOP overcount or a wrong peak leaves (0, 1]
    assert 0 < sft["mfu"] <= 1 and 0 < rl["update_mfu"] <= 1
    scan = sft["scan_layer_loop"]
    assert scan["scan_over_default"] == pytest.approx(scan["step_s"] / sft["step_s"])
    assert scan["flops_per_step"] == sft["flops_per_step"]
