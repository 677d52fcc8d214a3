"""scripts/bench_rollout.py: the --tiny --json smoke run (keys and bookkeeping, not timings) and its stop ids."""
import json
import math

import pytest
from script_module import load_script


@pytest.mark.slow  # ~7 XLA compiles of the tiny model: 20 s on a quiet 2-core machine, minutes under load
def test_tiny_json_run(capsys):
    br = load_script("bench_rollout")
    ret = br.main(["--tiny", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out == json.loads(json.dumps(ret))
    for key in ("backend", "preset", "params", "vocab_size", "slots", "trajectories", "tool_calls", "sleep_ms",
                "workers", "engine_tokens_per_s", "ratio", "target_ratio", "load_avg_1m"):
        assert key in out, key
    assert (out["preset"], out["slots"], out["trajectories"], out["tool_calls"]) == ("tiny", 2, 4, 2)
    for side in ("instant", "slow"):
        s = out[side]
        assert s["trajectories"] == 4 and s["errors"] == 0, s
        assert s["generated_tokens"] > 0 and s["wall_s"] > 0
        assert math.isclose(s["tokens_per_s"], s["generated_tokens"] / s["wall_s"])
        assert 0 <= s["env_wait_s"] <= s["wall_s"] and s["env_latency_s"] > 0
        # every episode that was not cut by the token budget made exactly --tool-calls tool calls, and the
        # tiny run finishes at least one, so the check has an episode to look at
        assert s["truncated"] < 4 and s["min_tool_calls_complete"] == 2, s
        assert s["turns"] <= 4 * 3 and s["truncated"] <= 4
        assert s["new_programs"] == 0, "the timed pass compiled something its warm-up had not"
    assert math.isclose(out["ratio"], out["slow"]["tokens_per_s"] / out["instant"]["tokens_per_s"])


def test_stop_ids_hold_the_template_end_and_ordinary_ids(tmp_path):
    br = load_script("bench_rollout")
    tok = br.build_tokenizer(str(tmp_path), n_tasks=50, vocab_size=512)
    ids = br.bench_stop_ids(tok, turn_tokens=8)
    assert ids[0] == tok.token_to_id("<|im_end|>")
    extra = ids[len(br.stop_token_ids(br.TEMPLATE, tok)):]
    assert len(extra) == tok.vocab_size // 8 == len(set(extra))
    assert not any(tok.is_special(i) for i in extra)
