"""Decode engine vs. the full forward: greedy continuations, stop rules, multi-turn resume, per-token stats,
DeepConf online stopping, non-finite rows, slot reuse without recompiling, bad input."""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vagent_jax.config import ConfigError
from vagent_jax.engine import DecodeEngine, DecodeState, EngineConfig, SamplingConfig, StopReason, reachable_programs
from vagent_jax.engine import programs as engine_programs
from vagent_jax.eval.deepconf import group_confidences, stop_position, trace_score
from vagent_jax.models.config import ModelConfig
from vagent_jax.models.transformer import forward, init_params

# init_std 0.5 makes logits peaked, so greedy argmax never sits on a near-tie between cached and full forward.
# Untied embeddings: a NaN embedding row poisons only the rows that read that token. Engines share compiled
# programs across tests when static settings and shapes agree, so every test uses the same B, S, chunk, conf_k.
CFG = ModelConfig(vocab_size=61, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64,
                  qk_norm=True, tie_embeddings=False, max_seq_len=64, init_std=0.5)
GREEDY = SamplingConfig(temperature=0.0)
NO_STOP: tuple[int, ...] = ()
PAD = 48  # every naive forward runs at this length


def random_params(cfg: ModelConfig, seed: int = 0):
    """Random weights in init_params' tree (norm scales near 1), drawn in numpy: eval_shape compiles nothing."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        is_norm = "norm" in jax.tree_util.keystr(path)
        x = (1.0 if is_norm else 0.0) + rng.normal(0.0, 0.1 if is_norm else cfg.init_std, leaf.shape)
        return jnp.asarray(x, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, jax.eval_shape(lambda: init_params(cfg, jax.random.key(0))))


@pytest.fixture(scope="module")
def params():
    return random_params(CFG)


@functools.lru_cache(maxsize=None)
def _full_fn(cfg: ModelConfig):
    return jax.jit(lambda p, t: forward(p, t, jnp.arange(t.shape[1])[None], cfg=cfg)[0][0])


def full_logits(params, seq, cfg: ModelConfig = CFG) -> np.ndarray:
    """[T, V] logits of the full (cache-free) forward over the whole sequence (right-padded to one
    compiled length: the causal mask keeps padding out of the first T rows)."""
    assert len(seq) <= PAD
    toks = np.zeros((1, PAD), np.int32)
    toks[0, : len(seq)] = seq
    return np.asarray(_full_fn(cfg)(params, jnp.asarray(toks)), np.float64)[: len(seq)]


def naive_turn(params, seq, budget, stop_ids=(), cfg: ModelConfig = CFG) -> list[int]:
    """Greedy continuation of seq by the full forward: up to `budget` tokens, ending on a stop id."""
    seq, out = list(seq), []
    for _ in range(budget):
        tok = int(np.argmax(full_logits(params, seq, cfg)[-1]))
        seq.append(tok)
        out.append(tok)
        if tok in stop_ids:
            break
    return out


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def make_engine(params, stop_ids=NO_STOP, stop_sequences=(), cfg: ModelConfig = CFG, **kw) -> DecodeEngine:
    # min_kv_bucket=8: decode chunks attend over 8, 16 or 32 cache slots, so every test exercises the buckets
    ecfg = dict(batch_slots=2, max_len=32, max_new_tokens=6, chunk_steps=4, min_prefill_bucket=32, min_kv_bucket=8,
                sampling=GREEDY)
    ecfg.update(kw)
    return DecodeEngine(params, cfg, EngineConfig(**ecfg), stop_ids, stop_sequences)


def prompts_of(lengths, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, CFG.vocab_size, n).tolist() for n in lengths]


def test_greedy_matches_naive_loop_and_reuses_slots_without_recompiling(params):
    prompts = prompts_of([3, 7, 20, 5, 9])
    eng = make_engine(params, min_prefill_bucket=16)
    trajs = eng.generate(prompts)
    for p, t in zip(prompts, trajs):
        want = naive_turn(params, p, 6)
        assert t.tokens.tolist() == p + want
        assert t.gen_mask.tolist() == [False] * len(p) + [True] * 6
        assert t.reason == "max_new_tokens"
    n = eng.compiled_programs
    # decode chunks per attention bucket {8, 16, 32} + prefill buckets (rows {1, 2}) x (tokens {16, 32})
    assert 2 <= n <= 3 + 2 * 2
    kv = {shape[3] for shape in eng._shapes if shape[0] == "decode"}
    assert min(kv) < 32 and kv <= {8, 16, 32}  # short rows attended over a prefix of the cache only
    jitted = (engine_programs.prefill_jit._cache_size(), engine_programs.decode_chunk_jit._cache_size())
    again = eng.generate(prompts)  # same shapes recur: no new programs, same greedy output
    assert eng.compiled_programs == n
    assert (engine_programs.prefill_jit._cache_size(), engine_programs.decode_chunk_jit._cache_size()) == jitted
    assert [t.tokens.tolist() for t in again] == [t.tokens.tolist() for t in trajs]
    assert eng.free_slots == 2


def test_prefill_token_budget_splits_admissions_into_smaller_calls(params):
    prompts = prompts_of([20, 25, 3, 7])  # admitted two by two: 2 x 32 tokens (over the budget), then 2 x 16
    eng = make_engine(params, min_prefill_bucket=16, min_prefill_rows=1, max_prefill_tokens=32)
    trajs = eng.generate(prompts)
    for p, t in zip(prompts, trajs):
        assert t.tokens.tolist() == p + naive_turn(params, p, 6)
    prefills = {k for k in eng.programs_used if k[0] == "prefill"}
    assert prefills == {("prefill", 1, 32), ("prefill", 2, 16)}  # the long pair went in two 1-row calls
    assert eng.programs_used <= reachable_programs(eng.cfg)
    assert ("prefill", 2, 32) not in reachable_programs(eng.cfg)
    assert ("prefill", 2, 32) in reachable_programs(dataclasses.replace(eng.cfg, max_prefill_tokens=0))


def test_stop_token_and_sequence_count_only_generated_tokens(params):
    prompt = prompts_of([6], seed=3)[0]
    ref = naive_turn(params, prompt, 6)
    # stop token: the first generated token that did not appear earlier in the continuation
    j = next(i for i in range(1, 6) if ref[i] not in ref[:i])
    (t,) = make_engine(params, stop_ids=(ref[j],)).generate([prompt])
    assert t.reason == "stop_token" and t.tokens.tolist() == prompt + ref[: j + 1]
    unused = [v for v in range(CFG.vocab_size) if v not in ref]
    # a stop sequence spanning the prompt's last token and the first generated token must not fire
    (t,) = make_engine(params, stop_sequences=[[prompt[-1], ref[0]], [unused[0]]]).generate([prompt])
    assert t.reason == "max_new_tokens" and t.tokens.tolist() == prompt + ref
    # a two-token stop sequence inside the generated tokens fires where it completes
    k = next(i for i in range(2, 6) if all(ref[i - 1:i + 1] != ref[a - 1:a + 1] for a in range(1, i)))
    (t,) = make_engine(params, stop_sequences=[[unused[1]], ref[k - 1:k + 1]]).generate([prompt])
    assert t.reason == "stop_sequence" and t.tokens.tolist() == prompt + ref[: k + 1]


def test_max_length_ends_at_the_cache_end(params):
    prompt = prompts_of([27], seed=4)[0]  # max_len 32: positions 27..31 hold 5 generated tokens
    (t,) = make_engine(params, max_new_tokens=20).generate([prompt])
    assert t.reason == "max_length" and len(t.tokens) == 32
    assert t.tokens.tolist() == prompt + naive_turn(params, prompt, 5)
    long = prompts_of([31], seed=5)[0]  # the largest prompt that fits: one token is sampled, then the end
    (t,) = make_engine(params).generate([long])
    assert t.reason == "max_length" and t.num_generated == 1


def test_multi_turn_resume_matches_naive_and_masks_observations(params):
    prompt, obs = prompts_of([5, 4], seed=6)
    ref = naive_turn(params, prompt, 8)
    stop = ref[2] if ref[2] not in ref[:2] else ref[0]
    eng = make_engine(params, stop_ids=(stop,), max_new_tokens=8)
    eng.submit("a", prompt)
    ends = []
    while not ends:
        ends = eng.step()
    (end,) = ends
    turn1 = naive_turn(params, prompt, 8, (stop,))
    assert end.request_id == "a" and end.reason == "stop_token" and end.tokens == turn1
    eng.resume("a", obs)
    ends = []
    while not ends:
        ends = eng.step()
    turn2 = naive_turn(params, prompt + turn1 + obs, 8, (stop,))
    assert ends[0].tokens == turn2
    t = eng.finish("a")
    seq = prompt + turn1 + obs + turn2
    assert t.tokens.tolist() == seq
    gen = np.zeros(len(seq), bool)
    gen[len(prompt):len(prompt) + len(turn1)] = True
    gen[len(seq) - len(turn2):] = True
    np.testing.assert_array_equal(t.gen_mask, gen)
    # the next token's log-prob under the full forward: logits at i-1 predict token i
    lp = log_softmax(full_logits(params, seq))
    want = np.array([lp[i - 1, seq[i]] for i in range(1, len(seq))])
    np.testing.assert_allclose(t.logprob[1:][gen[1:]], want[gen[1:]], atol=1e-4)
    assert np.all(t.logprob[~gen] == 0) and np.all(t.entropy[~gen] == 0)
    assert eng.free_slots == 2


def test_sampled_stats_equal_full_forward(params):
    """T=0.7 sampling: logprob (T=1), entropy of softmax(x/T), confidence (top-k mean) at each generated token."""
    sc = SamplingConfig(temperature=0.7)
    prompts = prompts_of([4, 9, 6], seed=7)
    eng = make_engine(params, sampling=sc, max_new_tokens=10)
    for p, t in zip(prompts, eng.generate(prompts)):
        seq = t.tokens.tolist()
        assert seq[: len(p)] == p and t.num_generated == 10
        x = full_logits(params, seq)[len(p) - 1: -1]  # logits predicting each generated token
        lp1 = log_softmax(x)
        gen = seq[len(p):]
        np.testing.assert_allclose(t.logprob[len(p):], lp1[np.arange(10), gen], atol=1e-4)
        lpt = log_softmax(x / 0.7)
        np.testing.assert_allclose(t.entropy[len(p):], -(np.exp(lpt) * lpt).sum(-1), atol=1e-4)
        conf = -np.sort(lp1, axis=-1)[:, ::-1][:, :sc.conf_k].mean(-1)
        np.testing.assert_allclose(t.confidence[len(p):], conf, atol=1e-4)
        np.testing.assert_allclose(t.sample_logprob[len(p):], lpt[np.arange(10), gen], atol=1e-4)


def test_deepconf_online_stop_matches_offline_simulation(params):
    window, budget = 4, 14
    prompts = prompts_of([5, 8], seed=8)
    kw = dict(deepconf_window=window, max_new_tokens=budget)
    free = make_engine(params, **kw).generate(prompts, thresholds=[-np.inf, -np.inf])
    assert all(t.reason == "max_new_tokens" and t.num_generated == budget for t in free)
    # above any window mean (confidence <= log V): stops as soon as the first full window exists
    high = make_engine(params, **kw).generate(prompts, thresholds=[np.log(CFG.vocab_size) + 1] * 2)
    assert all(t.reason == "deepconf" and t.num_generated == window for t in high)
    # a threshold between window means: the engine stops where the offline simulator says it would
    conf = free[0].confidence[free[0].gen_mask]
    groups = np.sort(group_confidences(conf, window))
    gaps = np.diff(groups)
    i = int(np.argmax(gaps[: len(gaps) // 2 + 1]))
    thr = float(groups[i] + gaps[i] / 2)
    expect = stop_position(conf, thr, window)
    assert expect is not None and window <= expect <= budget
    (t,) = make_engine(params, **kw).generate(prompts[:1], thresholds=[thr])
    assert t.reason == "deepconf" and t.num_generated == expect
    np.testing.assert_allclose(t.confidence[t.gen_mask], conf[:expect], atol=1e-5)
    assert trace_score(t.confidence[t.gen_mask], window, "lowest_group") < thr


def test_nonfinite_row_is_flagged_and_slot_is_reusable(params):
    ok_prompt = prompts_of([8], seed=9)[0]
    short = ok_prompt[:3]
    ref, ref_short = naive_turn(params, ok_prompt, 6), naive_turn(params, short, 6)
    bad_tok = min(set(range(CFG.vocab_size)) - set(ok_prompt + ref + ref_short))  # never read by clean rows
    poisoned_params = dict(params, embed=params["embed"].at[bad_tok].set(jnp.nan))
    eng = make_engine(poisoned_params)
    poisoned, good, later = eng.generate([[1, bad_tok] + ok_prompt, ok_prompt, short])
    assert poisoned.reason == "nonfinite" and poisoned.num_generated == 1
    assert good.reason == "max_new_tokens" and good.tokens.tolist() == ok_prompt + ref
    # `later` was admitted into the poisoned slot, whose cache holds NaN beyond its short prompt:
    # masked-out stale entries must not reach the new request (0 * NaN = NaN in attention)
    assert later.reason == "max_new_tokens" and later.tokens.tolist() == short + ref_short


def test_state_is_typed_and_stores_stop_reasons(params):
    """The device state is a DecodeState pytree whose `reason` holds StopReason codes; a trajectory carries
    the code's label."""
    eng = make_engine(params)
    (traj,) = eng.generate([[1, 2, 3]])
    assert isinstance(eng.state, DecodeState) and eng.state.tokens.shape == (eng.cfg.batch_slots, eng.cfg.max_len)
    code = StopReason(int(eng.state.reason[0]))
    assert code is StopReason.MAX_NEW_TOKENS and traj.reason == code.label == "max_new_tokens"
    assert [r.label for r in StopReason] == ["running", "stop_token", "stop_sequence", "max_new_tokens",
                                             "max_length", "deepconf", "nonfinite"]


def test_bad_input_names_the_culprit(params):
    eng = make_engine(params)
    with pytest.raises(ValueError, match="does not fit the cache"):
        eng.submit("x", [1] * 32)
    with pytest.raises(ValueError, match="empty prompt"):
        eng.submit("x", [])
    with pytest.raises(ValueError, match="vocabulary"):
        eng.submit("x", [1, CFG.vocab_size])
    eng.submit("x", [1, 2])
    with pytest.raises(ValueError, match="already in the engine"):
        eng.submit("x", [3])
    with pytest.raises(ValueError, match="still"):
        eng.resume("x", [4])
    with pytest.raises(ValueError, match="unknown request"):
        eng.resume("nope", [4])
    with pytest.raises(ValueError, match="unknown request"):
        eng.finish("nope")
    bad = [(dict(batch_slots=0), "'batch_slots'"), (dict(max_len=1), "'max_len'"),
           (dict(max_new_tokens=32), "'max_new_tokens'"), (dict(chunk_steps=0), "'chunk_steps'"),
           (dict(min_prefill_bucket=0), "'min_prefill_bucket'"), (dict(deepconf_window=0), "'deepconf_window'"),
           (dict(min_kv_bucket=0), "'min_kv_bucket'"), (dict(max_prefill_tokens=-1), "'max_prefill_tokens'"),
           (dict(impl="cuda"), "'impl'"), (dict(cache_dtype="int8"), "'cache_dtype'"),
           (dict(sampling=SamplingConfig(temperature=-1.0)), "'sampling.temperature'")]
    for kw, key in bad:
        with pytest.raises((ConfigError, ValueError), match=key):
            make_engine(params, **kw)
    with pytest.raises(ValueError, match="stop_sequences"):
        make_engine(params, stop_sequences=[[]])
    with pytest.raises(ValueError, match="stop_token_ids"):
        make_engine(params, stop_ids=(CFG.vocab_size,))


def test_generate_stops_with_an_error_when_no_slot_can_free(params):
    """Both slots hold turns awaiting resume/finish: generate() must raise, not spin."""
    eng = make_engine(params)
    eng.submit("a", [1, 2, 3])
    eng.submit("b", [4, 5])
    ended: list = []
    while len(ended) < 2:
        ended += eng.step()
    assert not eng.has_work and eng.free_slots == 0
    with pytest.raises(RuntimeError, match="cannot make progress"):
        eng.generate([[7, 8]])
