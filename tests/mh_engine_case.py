"""The shared case of the multi-host engine test: a tiny model, engine settings, prompts, one observation."""
from __future__ import annotations

import numpy as np
from vagent_jax.models.config import ModelConfig
from vagent_jax.models.transformer import init_params  # noqa: F401  (re-exported for the driver)
from vagent_jax.engine import EngineConfig, SamplingConfig

# 2 KV heads over tensor = 2, d_model 64 / vocab 128 over fsdp = 2; peaked logits (init_std 0.5): greedy
# argmax has no near-ties across layouts. 8 slots: 4 per host. One prefill (8 rows x 32 tokens) and one decode
# program (attention over all 64 positions): little to compile.
CFG = ModelConfig(vocab_size=128, d_model=64, n_layers=1, n_heads=4, n_kv_heads=2, head_dim=16, d_ff=128,
                  qk_norm=True, tie_embeddings=False, max_seq_len=64, init_std=0.5)
ENGINE = EngineConfig(batch_slots=8, max_len=64, max_new_tokens=6, chunk_steps=4, min_prefill_bucket=32,
                      min_prefill_rows=8, min_kv_bucket=64, sampling=SamplingConfig(temperature=0.0))
OBSERVATION = [3, 5, 7, 11]


def handle_turns(engine, ended, turns: dict, done: dict) -> list:
    """Process the turns that ended: a first turn gets OBSERVATION and resumes, a second finishes and its
    trajectory goes to `done`; returns the ids that finished."""
    finished = []
    for t in ended:
        turns[t.request_id] += 1
        if turns[t.request_id] == 1:
            engine.resume(t.request_id, OBSERVATION)
            continue
        traj = engine.finish(t.request_id)
        done[t.request_id] = {"tokens": traj.tokens.tolist(), "gen_mask": traj.gen_mask.tolist(),
                              "reason": traj.reason}
        finished.append(t.request_id)
    return finished


def prompts() -> list[list[int]]:
    """11 prompts of 3..19 tokens: uneven per host (6 and 5), more than a host's 4 slots."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, CFG.vocab_size, int(k)).tolist() for k in rng.integers(3, 20, 11)]
