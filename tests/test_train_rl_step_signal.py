"""RL step, training signal (issue 16): token selections made over the whole update batch (micro-batching
changes neither a selection nor the gradient), log-probs at the rollout temperature, and metrics that
reduce exactly over mini-batch updates of unequal token counts."""
import jax
import numpy as np
import pytest

from vagent_jax.models.config import ModelConfig
from vagent_jax.models.transformer import forward
from vagent_jax.rl.policy_loss import PolicyLossConfig
from vagent_jax.sharding import MeshConfig, make_mesh
from vagent_jax.testing import random_params
from vagent_jax.train.optimizer import OptimizerConfig
from vagent_jax.train.rl_step import make_compute_logprobs, make_rl_step
from vagent_jax.train.step_metrics import StepMetrics, reduce_step_metrics
from vagent_jax.train.train_state import train_state_from_params

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64)
OPT = OptimizerConfig(lr=1e-2, warmup_steps=0, schedule="constant")
B, T = 8, 12


def _batch(seed=0, lengths=None):
    rng = np.random.default_rng(seed)
    mask = np.zeros((B, T), np.float32)
    for i, n in enumerate(lengths or [T - 2] * B):
        mask[i, 2:2 + n] = 1.0
    return {"tokens": rng.integers(0, CFG.vocab_size, (B, T)).astype(np.int32),
            "positions": np.tile(np.arange(T, dtype=np.int32), (B, 1)), "loss_mask": mask,
            "advantages": rng.normal(0, 1, B).astype(np.float32)}


@pytest.fixture(scope="module")
def mesh():
    return make_mesh(MeshConfig(fsdp=1), devices=jax.devices()[:1])


SELECTING = {
    "80_20": PolicyLossConfig(entropy_top_frac=0.2),
    "clip_cov": PolicyLossConfig(covariance="clip_cov", clip_cov_ratio=0.1, clip_cov_low=0.0, clip_cov_high=50.0),
    "kl_cov": PolicyLossConfig(covariance="kl_cov", kl_cov_k=0.1),
}


@pytest.mark.parametrize("name", sorted(SELECTING))
def test_selections_and_gradient_do_not_depend_on_micro_batches(mesh, name):
    """1 vs 4 micro-batches: the same tokens selected (frac_kept / frac_detached), loss and grad norm.
    Selecting per micro-batch changed the 80/20 gradient by up to 0.1 at 4 micro-batches."""
    cfg, params = SELECTING[name], random_params(CFG, 1, std=0.3)
    batch = _batch(1)
    old, _ = make_compute_logprobs(CFG, mesh)(params, batch)
    batch["old_logp"] = np.asarray(old) + np.random.default_rng(2).normal(0, 0.2, (B, T)).astype(np.float32)
    got = {}
    for mb in (1, 4):
        state = train_state_from_params(params, CFG, OPT, mesh)
        step = make_rl_step(CFG, OPT, cfg, mesh, micro_batches=mb, seq_chunk=4)
        got[mb] = reduce_step_metrics([step(state, batch, jax.random.key(3), 0.0)[1]])
    frac = "frac_kept" if name == "80_20" else "frac_detached"
    assert 0 < got[1][frac] < 1
    for k in (frac, "loss", "pg_loss", "grad_norm", "clip_frac_low", "clip_frac_high", "cov_mean"):
        np.testing.assert_allclose(got[4][k], got[1][k], rtol=1e-5, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("temperature", [0.8, 1.3])
def test_logprobs_and_entropy_at_the_rollout_temperature(mesh, temperature):
    params, batch = random_params(CFG, 4, std=0.3), _batch(4)
    lp, ent = make_compute_logprobs(CFG, mesh, temperature=temperature)(params, batch)
    logits = np.asarray(forward(params, batch["tokens"], batch["positions"], cfg=CFG)[0], np.float64) / temperature
    top = logits.max(-1, keepdims=True)
    ref = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))  # log softmax(z / T)
    want = ref[np.arange(B)[:, None], np.arange(T - 1)[None], batch["tokens"][:, 1:]]
    np.testing.assert_allclose(np.asarray(lp)[:, 1:], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ent)[:, 1:], -(np.exp(ref) * ref).sum(-1)[:, :-1], rtol=1e-5, atol=1e-5)
    # the on-policy step's entropy metric reads the same tempered distribution
    state = train_state_from_params(params, CFG, OPT, mesh)
    step = make_rl_step(CFG, OPT, PolicyLossConfig(), mesh, temperature=temperature, seq_chunk=4)
    m = reduce_step_metrics([step(state, batch, jax.random.key(0), 0.0)[1]])
    valid = batch["loss_mask"][:, 1:] > 0
    np.testing.assert_allclose(m["entropy"], (-(np.exp(ref) * ref).sum(-1)[:, :-1])[valid].mean(), rtol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        make_rl_step(CFG, OPT, PolicyLossConfig(), mesh, temperature=0.0)


def test_metrics_reduce_exactly_over_updates_of_unequal_size(mesh):
    """Two mini-batch updates of 6 and 30 counted tokens (lr ~0, so the params do not move between them)
    report what one update over all 36 tokens reports; a mean of the two means would weigh them equally."""
    params = random_params(CFG, 5, std=0.3)
    lengths = [1, 1, 2, 2, 8, 8, 7, 7]
    batch = _batch(5, lengths)
    old, _ = make_compute_logprobs(CFG, mesh)(params, batch)
    batch["old_logp"] = np.asarray(old) + np.random.default_rng(6).normal(0, 0.3, (B, T)).astype(np.float32)
    batch["rollout_logp"] = batch["old_logp"] + 0.05
    cfg = PolicyLossConfig(mismatch="tis")
    tiny = OptimizerConfig(lr=1e-30, warmup_steps=0, schedule="constant")
    step = make_rl_step(CFG, tiny, cfg, mesh, seq_chunk=4)
    whole = reduce_step_metrics([step(train_state_from_params(params, CFG, tiny, mesh), batch, jax.random.key(0))[1]])
    state, parts = train_state_from_params(params, CFG, tiny, mesh), []
    for rows in (slice(0, 4), slice(4, 8)):
        state, m = step(state, {k: v[rows] for k, v in batch.items()}, jax.random.key(0))
        parts.append(m)
    split = reduce_step_metrics(parts)
    assert split["tokens"] == whole["tokens"] == sum(lengths) - 0 and split["updates"] == 2
    for k in ("loss", "pg_loss", "entropy", "approx_kl", "clip_frac_low", "clip_frac_high", "tis_weight_mean",
              "mismatch_abs_prob_diff", "mismatch_kl", "mismatch_max_ratio", "entropy_p10", "entropy_p50",
              "entropy_p90"):
        np.testing.assert_allclose(split[k], whole[k], rtol=1e-5, atol=1e-7, err_msg=k)
    means = [reduce_step_metrics([p])["loss"] for p in parts]
    assert abs(np.mean(means) - whole["loss"]) > 1e-3  # the test tells the two reductions apart


def test_reduce_step_metrics_by_hand():
    def upd(s, c, mx, ent, mask):
        return StepMetrics({"x": (np.float32(s), np.float32(c))}, {"m": np.float32(mx)},
                           {"tokens": np.float32(c)}, np.asarray(ent, np.float32), np.asarray(mask, bool))

    out = reduce_step_metrics([upd(3.0, 1.0, 2.0, [[1.0, 9.0]], [[1, 0]]), upd(1.0, 3.0, 5.0, [[2.0, 3.0]], [[1, 1]])])
    assert out["x"] == 1.0 and out["m"] == 5.0 and out["tokens"] == 4.0  # (3 + 1) / (1 + 3), not (3 + 1/3) / 2
    np.testing.assert_allclose(out["entropy_p50"], 2.0)  # over {1, 2, 3}: the masked 9 is left out
    assert reduce_step_metrics([]) == {}
