"""Issue #9 point 1 end to end: sample with the real decode engine, build the update batch the RL loop
builds (rollout_batch.update_batch), recompute log-probs with the training forward (make_compute_logprobs)
and measure the rollout/train mismatch (rl.mismatch.mismatch_metrics).

Same params everywhere. fp32 model, fp32 cache, temperature 1, top_p 1: the metric is ~0 (|p diff| < 1e-5,
|KL| < 1e-5, max ratio within 1e-4 of 1). bf16 model compute / bf16 KV cache in the engine, or top_p < 1:
clearly non-zero (|p diff| > 1e-4 and above 100x the fp32 figure; measured on CPU: fp32 8e-8, bf16 compute
and cache 2.5e-3 (bf16 cache alone 6e-4), top_p 0.8 3e-2 with KL 0.2).

The rollout side is the engine's sample_logprob (update_batch), the distribution the token was drawn from;
with top_p < 1 the temperature-1 `logprob` would hide the truncation entirely (measured: 8e-8).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from vagent_jax.engine import DecodeEngine, EngineConfig, SamplingConfig
from vagent_jax.models.config import ModelConfig
from vagent_jax.models.transformer import init_params
from vagent_jax.rl.mismatch import mismatch_metrics
from vagent_jax.rl.rollout_batch import update_batch
from vagent_jax.sharding import MeshConfig, make_mesh
from vagent_jax.train.rl_step import make_compute_logprobs

# init_std 0.3: next-token distributions neither uniform nor one-hot, so a top_p of 0.8 truncates something
CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64,
                  max_seq_len=64, init_std=0.3)
SEQ, ROWS, NEW = 32, 8, 12
FP32_TOL = 1e-5  # "~0": fp32 sampler and trainer differ only by summation order
CLEAR = 1e-4  # "clearly non-zero" (and 100x the fp32 figure)


def _params():
    shapes = jax.eval_shape(lambda: init_params(CFG, jax.random.key(0)))
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        norm = "norm" in jax.tree_util.keystr(path)
        return jnp.asarray((1.0 if norm else 0.0) + rng.normal(0.0, 0.05 if norm else CFG.init_std, leaf.shape),
                           leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def setup():
    params = _params()
    mesh = make_mesh(MeshConfig(), devices=jax.devices()[:1])
    logprobs = make_compute_logprobs(CFG, mesh)  # the trainer's forward: fp32 model config
    prompts = [np.random.default_rng(i).integers(1, CFG.vocab_size, 3 + i).tolist() for i in range(ROWS)]
    return params, logprobs, prompts


@pytest.fixture(scope="module")
def fp32(setup):
    """The matched-numerics baseline: fp32 model and cache, temperature 1, no truncation."""
    return _measure(setup)


def _measure(setup, *, model_dtype: str = "float32", cache_dtype: str = "float32", top_p: float = 1.0,
             temperature: float = 1.0, trainer_temperature: float | None = None, with_entropy: bool = False):
    """Roll out ROWS prompts, then return (metrics dict, batch, trainer logp) of trainer vs rollout log-probs;
    the trainer scores at trainer_temperature (default: the sampling temperature, as the RL step does)."""
    params, logprobs, prompts = setup
    engine_model = dataclasses.replace(CFG, dtype=model_dtype)  # params unchanged (fp32)
    ecfg = EngineConfig(batch_slots=ROWS, max_len=SEQ, max_new_tokens=NEW, chunk_steps=4, min_prefill_bucket=16,
                        cache_dtype=cache_dtype, sampling=SamplingConfig(temperature=temperature, top_p=top_p))
    trajs = DecodeEngine(params, engine_model, ecfg, stop_token_ids=(), seed=3).generate(prompts)
    assert all(t.num_generated == NEW for t in trajs)
    batch = update_batch(trajs, np.zeros(ROWS, np.float32), np.ones(ROWS, bool), ROWS, SEQ, 0)
    t_train = temperature if trainer_temperature is None else trainer_temperature
    if t_train != 1.0:
        logprobs = make_compute_logprobs(CFG, make_mesh(MeshConfig(), devices=jax.devices()[:1]), temperature=t_train)
    train_logp, train_ent = logprobs(params, batch)
    if with_entropy:  # the engine's sampling entropy of each generated token, aligned like the logp
        engine_ent = np.zeros((ROWS, SEQ), np.float32)
        for i, t in enumerate(trajs):
            engine_ent[i, :len(t.tokens)] = t.entropy
        return engine_ent, np.asarray(train_ent), batch
    mm = mismatch_metrics(train_logp, jnp.asarray(batch["rollout_logp"]), jnp.asarray(batch["loss_mask"]))
    out = {k: float(s / c) for k, (s, c) in mm.means.items()}
    out["max_ratio"] = float(mm.maxima["max_ratio"])
    return out, batch, np.asarray(train_logp)


def test_fp32_sampler_matches_trainer(fp32):
    m, batch, _ = fp32
    assert batch["loss_mask"].sum() == ROWS * NEW
    assert m["abs_prob_diff"] < FP32_TOL, m
    assert abs(m["kl"]) < FP32_TOL, m
    assert abs(m["max_ratio"] - 1.0) < 1e-4, m


def test_tempered_sampler_matches_the_tempered_trainer(setup, fp32):
    """Issue 16.2: at T = 0.8 the trainer scores tokens at T as well, so the fp32 mismatch stays ~0; scoring
    them at T = 1 (what the trainer did) is clearly off-policy. The sampler's entropy (the adaptive-entropy
    controller's input) and the training entropy read the same distribution."""
    m, _, _ = _measure(setup, temperature=0.8)
    assert m["abs_prob_diff"] < FP32_TOL and abs(m["kl"]) < FP32_TOL and abs(m["max_ratio"] - 1.0) < 1e-4, m
    off, _, _ = _measure(setup, temperature=0.8, trainer_temperature=1.0)
    assert off["abs_prob_diff"] > max(CLEAR, 100 * fp32[0]["abs_prob_diff"]), off
    engine_ent, train_ent, batch = _measure(setup, temperature=0.8, with_entropy=True)
    mask = batch["loss_mask"] > 0
    np.testing.assert_allclose(train_ent[mask], engine_ent[mask], rtol=1e-4, atol=1e-5)


def test_bf16_sampler_is_clearly_off(setup, fp32):
    base = fp32[0]
    m, _, _ = _measure(setup, model_dtype="bfloat16", cache_dtype="bfloat16")
    assert m["abs_prob_diff"] > max(CLEAR, 100 * base["abs_prob_diff"]), (m, base)
    assert abs(m["max_ratio"] - 1.0) > 1e-3, m


def test_top_p_truncation_is_clearly_off_and_ratio_below_one(setup, fp32):
    base = fp32[0]
    m, batch, train_logp = _measure(setup, top_p=0.8)
    assert m["abs_prob_diff"] > max(CLEAR, 100 * base["abs_prob_diff"]), (m, base)
    # renormalising over the nucleus raises every kept token's probability: pi_old / pi_rollout <= 1
    mask = batch["loss_mask"] > 0
    assert np.all(batch["rollout_logp"][mask] >= train_logp[mask] - 1e-5)
    assert m["kl"] > CLEAR and m["max_ratio"] <= 1.0 + 1e-5, m
