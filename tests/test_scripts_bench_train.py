"""scripts/bench_train.py: the --quick --json run reports positive step times and MFU in (0, 1]."""
import json
import os
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "bench_train.py"


def test_quick_json_run() -> None:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--compare-scan", "--json"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["matmul_peak_flops"] > 0
    assert out["sft"]["step_s"] > 0 and 0 < out["sft"]["mfu"] <= 1
    assert out["rl"]["rollout_s"] > 0 and out["rl"]["update_s"] > 0
    assert abs(out["rl"]["step_s"] - out["rl"]["rollout_s"] - out["rl"]["update_s"]) < 1e-9
    scan = out["sft"]["scan_layer_loop"]
    assert scan["step_s"] > 0 and scan["scan_over_default"] == scan["step_s"] / out["sft"]["step_s"]
    assert scan["flops_per_step"] == out["sft"]["flops_per_step"]
