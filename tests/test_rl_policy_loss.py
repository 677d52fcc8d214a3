"""The policy loss vs a per-token numpy loop written from docs/algorithms.md, for every option; gradients
where the formula fixes them; micro-batch (sum, denominator) aggregation; config errors."""
import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vagent_jax.config import ConfigError, from_dict
from vagent_jax.rl import entropy_control as ec
from vagent_jax.rl.policy_loss import PolicyLossConfig, policy_loss

B, T, MAX_LEN = 8, 10, 16


def make_inputs(seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, T + 1, B)
    mask = np.arange(T)[None] < lengths[:, None]
    mask[2, 1:3] = False  # a tool observation inside a response
    mask[5] = False  # a response with no policy tokens (e.g. overlong-filtered)
    old = -rng.uniform(0.05, 4.0, (B, T))
    logp = np.minimum(old + rng.normal(0, 0.3, (B, T)), -1e-3)
    rollout = old + rng.normal(0, 0.4, (B, T)) + np.linspace(-0.6, 0.6, B)[:, None]
    ref = old + rng.normal(0, 0.3, (B, T))
    entropy = rng.uniform(0, 3, (B, T))
    adv = rng.normal(0, 1.5, B)
    for x in (logp, old, rollout, ref):
        x[~mask] = 30.0  # garbage on masked positions must not leak into anything
    return dict(logp=logp, old_logp=old, advantages=adv, mask=mask.astype(np.float32), rollout_logp=rollout,
                ref_logp=ref, entropy=entropy)


def np_policy_loss(cfg, x, coef=0.0, max_len=MAX_LEN, detached=None):
    """Straight loop over responses and tokens; returns (loss, metric means)."""
    lp, old, adv, ent = x["logp"], x["old_logp"], x["advantages"], x["entropy"]
    valid = x["mask"] > 0
    n = int(valid.sum())
    a_tok = np.broadcast_to(adv[:, None], lp.shape)
    cov = np.where(valid, (lp - lp[valid].mean()) * (a_tok - a_tok[valid].mean()), 0.0)

    def top(score, count):
        idx = np.argwhere(valid)
        out = np.zeros(valid.shape, bool)
        out[tuple(idx[np.argsort(-score[valid], kind="stable")[:count]].T)] = True
        return out

    sel = top(cov, math.floor(Fraction(str(cfg.kl_cov_k)) * n)) if cfg.covariance == "kl_cov" else None
    kept = top(ent, math.ceil(Fraction(str(cfg.entropy_top_frac)) * n)) if cfg.entropy_top_frac < 1 else valid
    cap = cfg.mismatch_cap
    tok_loss, pg_loss = np.zeros(lp.shape), np.zeros(lp.shape)
    m = {k: 0.0 for k in ("clip_frac_low", "clip_frac_high", "approx_kl", "kl_ref", "masked", "tis")}
    for i in range(B):
        vi = valid[i]
        s_i = np.exp(np.mean((lp[i] - old[i])[vi])) if vi.any() else 1.0
        geo = np.exp(np.mean((old[i] - x["rollout_logp"][i])[vi])) if vi.any() else 1.0
        for t in range(T):
            if not vi[t]:
                continue
            a, rho = adv[i], np.exp(lp[i, t] - old[i, t])
            low = high = False
            if cfg.covariance == "kl_cov":
                pg = -a * rho + (cfg.kl_cov_beta * abs(lp[i, t] - old[i, t]) if sel[i, t] else 0.0)
            elif cfg.objective == "cispo":
                lo, hi = 1 - cfg.cispo_eps_low_is, 1 + cfg.cispo_eps_high_is
                pg = -np.clip(rho, lo, hi) * a * lp[i, t]
                low, high = rho < lo, rho > hi
            else:
                r = s_i if cfg.objective == "gspo" else rho
                gspo = cfg.objective == "gspo"
                el, eh = (cfg.gspo_eps_low, cfg.gspo_eps_high) if gspo else (cfg.eps_low, cfg.eps_high)
                pg = -min(r * a, np.clip(r, 1 - el, 1 + eh) * a)
                low, high = (r < 1 - el and a < 0), (r > 1 + eh and a > 0)
            if detached is not None and detached[i, t]:
                pg = 0.0
            w = 1.0
            r_mis = np.exp(old[i, t] - x["rollout_logp"][i, t])
            if cfg.mismatch == "tis":
                w = min(r_mis, cap)
            elif cfg.mismatch == "mis_token":
                w = float(1 / cap <= r_mis <= cap)
            elif cfg.mismatch == "mis_seq":
                w = float(1 / cap <= geo <= cap)
            pg *= w
            m["masked"] += w == 0
            m["tis"] += w
            d = x["ref_logp"][i, t] - lp[i, t]
            kl = {"none": 0.0, "k1": -d, "k3": np.exp(d) - d - 1}[cfg.kl]
            m["kl_ref"] += kl
            pg_loss[i, t] = pg
            tok_loss[i, t] = pg + cfg.kl_coef * kl - coef * ent[i, t]
            if kept[i, t]:
                m["clip_frac_low"] += low
                m["clip_frac_high"] += high
            m["approx_kl"] += rho - 1 - np.log(rho)

    def agg(v):
        if cfg.aggregation == "token":
            return v[kept].sum() / kept.sum()
        rows = [v[i][kept[i]] for i in range(B) if kept[i].any()]
        per = [r.mean() if cfg.aggregation == "seq_mean_token_mean" else r.sum() / max_len for r in rows]
        return np.mean(per)

    means = {"pg_loss": agg(pg_loss), "clip_frac_low": m["clip_frac_low"] / kept.sum(),
             "clip_frac_high": m["clip_frac_high"] / kept.sum(), "approx_kl": m["approx_kl"] / n,
             "cov_mean": cov[valid].mean(), "entropy": ent[valid].mean()}
    if cfg.kl != "none":
        means["kl_ref"] = m["kl_ref"] / n
    if cfg.mismatch == "tis":
        means["tis_weight_mean"] = m["tis"] / n
    elif cfg.mismatch != "none":
        means["frac_masked"] = m["masked"] / n
    if cfg.entropy_top_frac < 1:
        means["frac_kept"] = kept.sum() / n
    if cfg.covariance == "kl_cov":
        means["frac_detached"] = sel.sum() / n
    return agg(tok_loss), means


CASES = {
    "dapo_token": dict(),
    "grpo_seq_mean": dict(aggregation="seq_mean_token_mean"),
    "drgrpo_seq_sum": dict(aggregation="seq_sum_const"),
    "gspo": dict(objective="gspo", aggregation="seq_mean_token_mean"),
    "gspo_wide": dict(objective="gspo", gspo_eps_low=0.05, gspo_eps_high=0.1),
    "cispo": dict(objective="cispo"),
    "cispo_both_bounds": dict(objective="cispo", cispo_eps_low_is=0.1, cispo_eps_high_is=0.2),
    "kl_k1": dict(kl="k1", kl_coef=0.1),
    "kl_k3": dict(kl="k3", kl_coef=0.3, aggregation="seq_mean_token_mean"),
    "tis": dict(mismatch="tis", mismatch_cap=1.5),
    "mis_token": dict(mismatch="mis_token", mismatch_cap=1.5),
    "mis_seq": dict(mismatch="mis_seq", mismatch_cap=1.3, aggregation="seq_sum_const"),
    "high_entropy": dict(entropy_top_frac=0.3),
    "high_entropy_seq": dict(entropy_top_frac=0.45, aggregation="seq_mean_token_mean", kl="k3", kl_coef=0.2),
    "kl_cov": dict(covariance="kl_cov", kl_cov_k=0.1, kl_cov_beta=0.7),
}


def _call(cfg, x, **kw):
    return policy_loss(x["logp"], x["old_logp"], x["advantages"], x["mask"], cfg=cfg, rollout_logp=x["rollout_logp"],
                       ref_logp=x["ref_logp"], entropy=x["entropy"], max_len=MAX_LEN, **kw)


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_and_metrics_match_numpy(name):
    cfg = PolicyLossConfig(**CASES[name])
    x = make_inputs(1)
    coef = 0.01
    loss_sum, denom, metrics = _call(cfg, x, entropy_coef=coef)
    want_loss, want_metrics = np_policy_loss(cfg, x, coef=coef)
    np.testing.assert_allclose(float(loss_sum / denom), want_loss, rtol=2e-5, atol=1e-6)
    for k, v in want_metrics.items():
        s, c = metrics[k]
        np.testing.assert_allclose(float(s) / float(c), v, rtol=2e-5, atol=1e-6, err_msg=k)
    if name in ("dapo_token", "tis"):
        assert float(metrics["clip_frac_low"][0]) > 0 and float(metrics["clip_frac_high"][0]) > 0


def test_clip_cov_matches_numpy_with_the_same_pick():
    cfg = PolicyLossConfig(covariance="clip_cov", clip_cov_ratio=0.1, clip_cov_low=0.5, clip_cov_high=5.0)
    x = make_inputs(2)
    key = jax.random.key(7)
    valid = x["mask"] > 0
    ratio = np.exp(np.where(valid, x["logp"] - x["old_logp"], 0.0))
    adv = np.asarray(x["advantages"])[:, None]
    clipped = ((ratio < 1 - cfg.eps_low) & (adv < 0)) | ((ratio > 1 + cfg.eps_high) & (adv > 0))
    cov = ec.token_covariance(x["logp"], x["advantages"], valid)
    detached = np.asarray(ec.clip_cov_mask(cov, valid, key, 0.1, 0.5, 5.0, clipped=jnp.asarray(clipped)))
    assert detached.sum() == int(valid.sum()) // 10
    assert not (detached & clipped).any()
    # the candidates PPO clipped would have been picked without the exclusion (the case is not vacuous)
    assert (np.asarray(ec.clip_cov_mask(cov, valid, key, 0.1, 0.5, 5.0)) & clipped).any()
    loss_sum, denom, metrics = _call(cfg, x, key=key)
    want, _ = np_policy_loss(cfg, x, detached=detached)
    np.testing.assert_allclose(float(loss_sum / denom), want, rtol=2e-5)
    assert float(metrics["frac_detached"][0]) == detached.sum()
    # detached tokens get exactly zero gradient; the others do not
    grad = np.asarray(jax.grad(lambda lp: (lambda s, d, _: s / d)(*_call(cfg, {**x, "logp": lp}, key=key)))(
        jnp.asarray(x["logp"])))
    assert (grad[detached] == 0).all() and (grad[valid & ~detached] != 0).sum() > 0


def _grad_logp(cfg, x, **kw):
    def f(lp):
        s, d, _ = _call(cfg, {**x, "logp": lp}, **kw)
        return s / d

    return np.asarray(jax.grad(f)(jnp.asarray(x["logp"], jnp.float32)))


def test_ppo_clip_gradient():
    # d/dlogp of -min(rho A, clip(rho) A) = -A rho where the clip is not active, else 0; / #tokens.
    x = make_inputs(3)
    cfg = PolicyLossConfig()
    valid = x["mask"] > 0
    rho = np.exp(np.where(valid, x["logp"] - x["old_logp"], 0.0))
    a = x["advantages"][:, None]
    active = ((rho > 1.28) & (a > 0)) | ((rho < 0.8) & (a < 0))
    want = np.where(valid & ~active, -a * rho, 0.0) / valid.sum()
    np.testing.assert_allclose(_grad_logp(cfg, x), want, rtol=1e-5, atol=1e-7)


def test_cispo_gradient_is_clipped_weight_times_advantage():
    x = make_inputs(4)
    cfg = PolicyLossConfig(objective="cispo", cispo_eps_low_is=0.1, cispo_eps_high_is=0.1)
    valid = x["mask"] > 0
    w = np.clip(np.exp(x["logp"] - x["old_logp"]), 0.9, 1.1)
    want = np.where(valid, -w * x["advantages"][:, None], 0.0) / valid.sum()
    np.testing.assert_allclose(_grad_logp(cfg, x), want, rtol=1e-5, atol=1e-7)


def test_gspo_gradient_unclipped():
    # With wide bounds: d/dlogp_{i,t} of -s_i A_i = -A_i s_i / |o_i|, sequence-mean aggregation.
    x = make_inputs(5)
    cfg = PolicyLossConfig(objective="gspo", gspo_eps_low=0.9, gspo_eps_high=9.0, aggregation="seq_mean_token_mean")
    valid = x["mask"] > 0
    n_i = valid.sum(1, keepdims=True)
    s = np.exp(np.where(valid, x["logp"] - x["old_logp"], 0).sum(1, keepdims=True) / np.maximum(n_i, 1))
    want = np.where(valid, -x["advantages"][:, None] * s / np.maximum(n_i, 1), 0.0) / (n_i > 0).sum()
    np.testing.assert_allclose(_grad_logp(cfg, x), want, rtol=1e-5, atol=1e-7)


def test_masked_and_dropped_tokens_have_zero_gradient():
    x = make_inputs(6)
    valid = x["mask"] > 0
    for cfg in (PolicyLossConfig(mismatch="mis_token", mismatch_cap=1.3), PolicyLossConfig(entropy_top_frac=0.2)):
        g = _grad_logp(cfg, x)
        assert (g[~valid] == 0).all()
        if cfg.mismatch == "mis_token":
            r = np.exp(x["old_logp"] - x["rollout_logp"])
            out = valid & ((r < 1 / 1.3) | (r > 1.3))
            assert out.sum() > 0 and (g[out] == 0).all()
        else:
            kept = np.asarray(ec.top_fraction_mask(x["entropy"], valid, 0.2))
            assert (g[valid & ~kept] == 0).all() and (g[kept] != 0).sum() > 0


def test_entropy_bonus_gradient():
    x = make_inputs(7)
    valid = x["mask"] > 0

    def f(ent):
        s, d, _ = _call(PolicyLossConfig(), {**x, "entropy": ent}, entropy_coef=0.02)
        return s / d

    g = np.asarray(jax.grad(f)(jnp.asarray(x["entropy"], jnp.float32)))
    np.testing.assert_allclose(g, np.where(valid, -0.02 / valid.sum(), 0.0), rtol=1e-5)


MICRO_CASES = [dict(), dict(aggregation="seq_mean_token_mean", kl="k3", kl_coef=0.1),
               dict(aggregation="seq_sum_const", mismatch="mis_seq", mismatch_cap=1.3),
               dict(objective="gspo", mismatch="tis"), dict(objective="cispo", aggregation="seq_sum_const")]


@pytest.mark.parametrize("opts", MICRO_CASES, ids=lambda o: "-".join(f"{v}" for v in o.values()) or "default")
def test_micro_batches_add_up(opts):
    cfg = PolicyLossConfig(**opts)
    x = make_inputs(8)

    def parts(lp):
        out = []
        for j in range(4):
            sl = slice(2 * j, 2 * j + 2)
            xj = {k: v[sl] for k, v in x.items()}
            out.append(_call(cfg, {**xj, "logp": lp[sl]}, entropy_coef=0.01))
        return out

    lp = jnp.asarray(x["logp"], jnp.float32)
    full_sum, full_den, full_m = _call(cfg, {**x, "logp": lp}, entropy_coef=0.01)
    micro = parts(lp)
    tot_sum = sum(s for s, _, _ in micro)
    tot_den = sum(d for _, d, _ in micro)
    np.testing.assert_allclose(float(tot_sum / tot_den), float(full_sum / full_den), rtol=1e-5)
    np.testing.assert_allclose(float(tot_den), float(full_den))
    for k in ("pg_loss", "clip_frac_high", "approx_kl"):
        s = sum(float(m[k][0]) for _, _, m in micro)
        c = sum(float(m[k][1]) for _, _, m in micro)
        np.testing.assert_allclose(s / c, float(full_m[k][0]) / float(full_m[k][1]), rtol=1e-5, err_msg=k)
    den = float(full_den)
    g_full = jax.grad(lambda v: _call(cfg, {**x, "logp": v}, entropy_coef=0.01)[0] / den)(lp)
    g_micro = jax.grad(lambda v: sum(s for s, _, _ in parts(v)) / den)(lp)
    np.testing.assert_allclose(np.asarray(g_micro), np.asarray(g_full), rtol=1e-5, atol=1e-8)


def test_jit_with_static_config_matches_eager():
    cfg = PolicyLossConfig(covariance="clip_cov", clip_cov_ratio=0.05, kl="k3", kl_coef=0.1, mismatch="tis",
                           entropy_top_frac=0.5, aggregation="seq_mean_token_mean")
    x = make_inputs(9)
    key = jax.random.key(3)
    fn = jax.jit(policy_loss, static_argnames=("cfg", "max_len"))
    args = (x["logp"], x["old_logp"], x["advantages"], x["mask"])
    kw = dict(rollout_logp=x["rollout_logp"], ref_logp=x["ref_logp"], entropy=x["entropy"], key=key)
    got = fn(*args, cfg=cfg, entropy_coef=jnp.float32(0.003), max_len=MAX_LEN, **kw)
    want = policy_loss(*args, cfg=cfg, entropy_coef=0.003, max_len=MAX_LEN, **kw)
    np.testing.assert_allclose(float(got[0] / got[1]), float(want[0] / want[1]), rtol=1e-5)
    assert set(got[2]) == set(want[2])


@pytest.mark.parametrize("data,key", [
    ({"cispo_eps_high_is": -0.1}, "cispo_eps_high_is"), ({"cispo_eps_low_is": 1.5}, "cispo_eps_low_is"),
    ({"eps_low": -0.2}, "eps_low"), ({"mismatch_cap": 1.0}, "mismatch_cap"),
    ({"entropy_top_frac": 0.0}, "entropy_top_frac"), ({"entropy_top_frac": 1.5}, "entropy_top_frac"),
    ({"cispo_eps_low_is": -0.1}, "cispo_eps_low_is"), ({"mismatch_cap": 0.5}, "mismatch_cap"),
    ({"kl_coef": 0.1}, "kl_coef"), ({"objective": "gspo", "covariance": "kl_cov"}, "covariance"),
    ({"objective": "reinforce"}, "objective"), ({"aggregation": "seq"}, "aggregation"),
    ({"clip_cov_low": 6.0}, "clip_cov_low"), ({"kl_cov_k": 0.0}, "kl_cov_k"),
])
def test_config_errors_name_the_key(data, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        from_dict(PolicyLossConfig, data)
    with pytest.raises(ConfigError, match=f"'{key}'"):
        PolicyLossConfig(**data).validate()


def test_missing_inputs_name_the_tensor():
    x = make_inputs(0)
    args = (x["logp"], x["old_logp"], x["advantages"], x["mask"])
    with pytest.raises(ValueError, match="rollout_logp"):
        policy_loss(*args, cfg=PolicyLossConfig(mismatch="tis"))
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(*args, cfg=PolicyLossConfig(kl="k1"))
    with pytest.raises(ValueError, match="key"):
        policy_loss(*args, cfg=PolicyLossConfig(covariance="clip_cov"))
    with pytest.raises(ValueError, match="entropy"):
        policy_loss(*args, cfg=PolicyLossConfig(), entropy_coef=0.1)
    with pytest.raises(ValueError, match="max_len"):
        policy_loss(*args, cfg=PolicyLossConfig(aggregation="seq_sum_const"))
    with pytest.raises(ValueError, match="old_logp"):
        policy_loss(x["logp"], x["old_logp"][:, :4], x["advantages"], x["mask"], cfg=PolicyLossConfig())
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(x["logp"], x["old_logp"], x["advantages"][:3], x["mask"], cfg=PolicyLossConfig())
