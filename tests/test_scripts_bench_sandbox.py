"""scripts/bench_sandbox.py: the --json run's keys and bookkeeping (not its timings)."""
import json

from script_module import load_script


def test_json_run_covers_every_backend(capsys):
    bs = load_script("bench_sandbox")
    ret = bs.main(["--calls", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out == json.loads(json.dumps(ret)) and out["calls"] == 2
    assert set(out["backends"]) | set(out["unavailable"]) == {"floor", *bs.BACKENDS}
    assert "floor" in out["backends"] and "unisolated" in out["backends"]
    for r in out["backends"].values():
        assert r["median_ms"] > 0 and r["p90_ms"] > 0
    assert out["backends"]["floor"]["overhead_ms"] == 0.0
