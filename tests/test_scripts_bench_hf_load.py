"""scripts/bench_hf_load.py: a small HF checkpoint loads on 1 and 8 fake devices; bytes per device shrink ~8x."""
import json
import os
import pathlib
import subprocess
import sys

from vagent_jax.models.config import PRESETS

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "bench_hf_load.py"


def test_quick_json_run_reports_load_times_and_sharded_bytes():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # the script sets each child's device count itself
    proc = subprocess.run([sys.executable, str(SCRIPT), "--preset", "4m", "--devices", "1,8", "--repeats", "1",
                           "--json"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["num_params"] == PRESETS["4m"].num_params
    one, eight = out["rows"]
    assert (one["devices"], eight["devices"]) == (1, 8)
    assert one["param_bytes"] == eight["param_bytes"] == 4 * out["num_params"]
    assert one["max_device_bytes"] == one["param_bytes"]  # one device holds everything
    assert eight["max_over_ideal"] < 1.25  # fsdp 8: each device about 1/8 (norms replicated)
    assert all(r["first_load_s"] > 0 and r["best_load_s"] > 0 for r in out["rows"])
