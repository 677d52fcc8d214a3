"""SFT step: loss and grads equal for 1 and 4 micro-batches, the update, the NaN guard with a poisoned
batch, the 2x2x2 mesh against one device, and batch errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vagent_jax.models.config import ModelConfig
from vagent_jax.sharding import MeshConfig, make_mesh
from vagent_jax.train.optimizer import OptimizerConfig
from vagent_jax.train.sft_step import make_sft_step, sft_loss_and_grads
from vagent_jax.train.train_state import create_train_state, param_shardings, train_state_from_params

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64,
                  remat="full")
OPT = OptimizerConfig(lr=1e-2, warmup_steps=2, total_steps=20, weight_decay=0.01)
B, T = 8, 16


def make_batch(seed=0):
    """Two packed segments per row with an assistant-only loss mask (float32)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, CFG.vocab_size, (B, T)).astype(np.int32)
    cut = rng.integers(4, T - 4, B)
    col = np.arange(T)[None]
    seg = np.where(col < cut[:, None], 1, 2).astype(np.int32)
    seg[:, -2:] = np.where(np.arange(B)[:, None] % 2 == 0, 0, seg[:, -2:])  # padding on even rows
    pos = np.where(seg == 1, col, col - cut[:, None]).astype(np.int32)
    pos[seg == 0] = 0
    loss_mask = ((rng.random((B, T)) < 0.6) & (seg > 0)).astype(np.float32)
    return {"tokens": tokens, "positions": pos, "segment_ids": seg, "loss_mask": loss_mask}


@pytest.fixture(scope="module")
def one_device():
    return make_mesh(MeshConfig(fsdp=1), devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def step_1dev(one_device):
    return make_sft_step(CFG, OPT, one_device, micro_batches=2, seq_chunk=8)


def _np(tree):
    return jax.tree.map(lambda x: np.array(x), tree)


@pytest.fixture(scope="module")
def base_params(one_device):
    """Random params as host arrays; every test builds its (donated) states from them."""
    return _np(create_train_state(CFG, OPT, one_device, jax.random.key(0)).params)


def test_loss_and_grads_equal_for_1_and_4_micro_batches(one_device, base_params):
    state = train_state_from_params(base_params, CFG, OPT, one_device)
    batch = make_batch()
    shard = param_shardings(CFG, one_device)
    out = {}
    for m in (1, 4):
        fn = jax.jit(lambda p, b, m=m: sft_loss_and_grads(p, b, cfg=CFG, mesh=one_device, micro_batches=m,
                                                          grad_shardings=shard, seq_chunk=8))
        out[m] = fn(state.params, batch)
    (l1, g1, s1), (l4, g4, s4) = out[1], out[4]
    np.testing.assert_allclose(l1, l4, rtol=1e-6)
    seg = batch["segment_ids"]
    has_pred = np.zeros_like(seg, bool)
    has_pred[:, 1:] = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)  # not t=0, not a segment's first token
    np.testing.assert_allclose(s1["tokens"], (batch["loss_mask"] * has_pred).sum(), rtol=1e-6)
    np.testing.assert_allclose(s4["tokens"], s1["tokens"], rtol=1e-6)
    np.testing.assert_allclose(s1["entropy"], s4["entropy"], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g4)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
    assert float(l1) > 0 and max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g1)) > 0


def test_step_updates_then_skips_poisoned_batch(one_device, step_1dev, base_params):
    state = train_state_from_params(base_params, CFG, OPT, one_device)
    before = _np(state.params)
    state, m = step_1dev(state, make_batch())
    assert int(state.step) == 1 and float(m["skipped"]) == 0.0
    assert np.isfinite(float(m["loss"])) and float(m["grad_norm"]) > 0
    np.testing.assert_allclose(m["lr"], OPT.lr_at(0), rtol=1e-6)
    assert any(np.abs(np.asarray(a) - b).max() > 0 for a, b in zip(jax.tree.leaves(state.params),
                                                                    jax.tree.leaves(before)))
    after_good = _np((state.params, state.opt_state))

    poisoned = make_batch(1)
    poisoned["loss_mask"][3, 2] = np.nan  # t=2 of segment 1: a counted token
    state, m = step_1dev(state, poisoned)
    assert float(m["skipped"]) == 1.0 and not np.isfinite(float(m["loss"]))
    assert int(state.step) == 2
    for a, b in zip(jax.tree.leaves((state.params, state.opt_state)), jax.tree.leaves(after_good)):
        np.testing.assert_array_equal(np.asarray(a), b)

    state, m = step_1dev(state, make_batch(2))
    assert float(m["skipped"]) == 0.0 and int(state.step) == 3
    np.testing.assert_allclose(m["lr"], OPT.lr_at(1), rtol=1e-6)  # the skipped step did not advance lr


def test_2x2x2_mesh_matches_one_device(one_device, step_1dev, base_params):
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    s8 = train_state_from_params(base_params, CFG, OPT, mesh)
    s1 = train_state_from_params(base_params, CFG, OPT, one_device)
    assert s8.params["layers"]["wq"].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
    batch = make_batch(3)
    s8, m8 = make_sft_step(CFG, OPT, mesh, micro_batches=2, seq_chunk=8)(s8, batch)
    s1, m1 = step_1dev(s1, batch)
    for k in ("loss", "tokens", "grad_norm", "entropy", "lr"):
        np.testing.assert_allclose(m8[k], m1[k], rtol=1e-5, err_msg=k)
    for a, b in zip(jax.tree.leaves(s8.params), jax.tree.leaves(s1.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)  # Adam ~ sign(g) at tiny g
    assert s8.params["embed"].sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    mu = s8.opt_state[1].mu["layers"]["w_up"]  # Adam moments live in their parameter's sharding
    assert mu.sharding.spec == s8.params["layers"]["w_up"].sharding.spec


def test_from_params_and_batch_errors(one_device, step_1dev, base_params):
    copy = train_state_from_params(base_params, CFG, OPT, one_device)
    assert int(copy.step) == 0
    np.testing.assert_array_equal(copy.params["embed"], base_params["embed"])
    bad = dict(base_params)
    bad["final_norm"] = np.ones((3,), np.float32)
    with pytest.raises(ValueError, match=r"final_norm.*\(3,\)"):
        train_state_from_params(bad, CFG, OPT, one_device)
    batch = make_batch()
    assert "tensor<8x16xi32>" in step_1dev.lower(copy, batch).as_text()  # AOT lowering path
    with pytest.raises(ValueError, match="missing keys \\['segment_ids'\\]"):
        step_1dev(copy, {k: v for k, v in batch.items() if k != "segment_ids"})
    with pytest.raises(ValueError, match="not divisible by micro_batches=2"):
        step_1dev(copy, {k: v[:3] for k, v in batch.items()})
    with pytest.raises(ValueError, match=r"batch\['loss_mask'\] must have shape"):
        step_1dev(copy, {**batch, "loss_mask": batch["loss_mask"][:, :4]})
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    with pytest.raises(ValueError, match="data x fsdp devices"):
        make_sft_step(CFG, OPT, mesh, micro_batches=4)(copy, batch)
