"""scripts/bench_rl_engine.py: the --quick --json run times both modes (persistent engine, rebuilt engine)."""
import json
import os
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "bench_rl_engine.py"


def test_quick_json_run() -> None:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--steps", "2", "--json"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    for mode in ("persistent", "rebuilt"):
        assert 0 < out[mode]["rollout_s"] < out[mode]["step_s"] and out[mode]["first_step_s"] > 0
    assert out["rebuilt_over_persistent"] == out["rebuilt"]["step_s"] / out["persistent"]["step_s"]
