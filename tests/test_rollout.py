"""RolloutRunner: ordering, observation prefill with gen_mask 0, truncation, environment faults.

Scripted-engine tests drive the runner with an engine double (DecodeEngine's public interface) whose turns
are exact texts, so tool calls, observations and rewards are known; one test runs a real DecodeEngine
(tiny random model) end to end through the worker pool and checks the token bookkeeping.
"""
from __future__ import annotations

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vagent_jax.chat_template import render_chat, render_turn_suffix, stop_token_ids
from vagent_jax.engine import DecodeEngine, EngineConfig, SamplingConfig, Trajectory, TurnEnd
from vagent_jax.envs import EnvWorkerPool, bench_tool, get_env
from vagent_jax.models.config import ModelConfig
from vagent_jax.models.transformer import init_params
from vagent_jax.rollout import RolloutRunner
from vagent_jax.tokenizer_train import train_sentencepiece

import rollout_fault_env  # noqa: F401  (registers rollout_fault_test in this process too)

TEMPLATE = "chatml"


class ScriptedEngine:
    """Engine double: the same public interface as DecodeEngine; turn texts come from script(rid, turn).

    script returns (text, reason); a "stop_token" turn ends with <|im_end|> like a real one. step() ends at
    most two queued turns, newest first, so turns (and trajectories) finish out of submission order.
    """

    def __init__(self, tok, script, slots: int):
        self.tok, self.script, self.slots = tok, script, slots
        self.end_id = stop_token_ids(TEMPLATE, tok)[0]
        self.rows: dict = {}  # rid -> [tokens, gen_mask, turns so far]
        self.queue: list = []
        self.stopped: set = set()
        self.most_held = 0

    @property
    def free_slots(self) -> int:
        return self.slots - len(self.rows)

    @property
    def has_work(self) -> bool:
        return bool(self.queue)

    def submit(self, rid, ids):
        assert rid not in self.rows and len(self.rows) < self.slots, "runner over-filled the slots"
        self.rows[rid] = [list(ids), [0] * len(ids), 0]
        self.most_held = max(self.most_held, len(self.rows))
        self.queue.append(rid)

    def step(self):
        out = []
        for rid in self.queue[::-1][:2]:
            self.queue.remove(rid)
            row = self.rows[rid]
            text, reason = self.script(rid, row[2])
            ids = self.tok.encode(text) + ([self.end_id] if reason == "stop_token" else [])
            row[0] += ids
            row[1] += [1] * len(ids)
            row[2] += 1
            self.stopped.add(rid)
            out.append(TurnEnd(rid, reason, ids))
        return out

    def resume(self, rid, suffix):
        assert rid in self.stopped, f"resume of {rid} while it is not stopped"
        self.stopped.discard(rid)
        self.rows[rid][0] += list(suffix)
        self.rows[rid][1] += [0] * len(suffix)
        self.queue.append(rid)

    def finish(self, rid):
        assert rid in self.stopped, f"finish of {rid} while it is not stopped"
        self.stopped.discard(rid)
        tokens, mask, _ = self.rows.pop(rid)
        z = np.zeros(len(tokens), np.float32)
        return Trajectory(rid, np.asarray(tokens), np.asarray(mask, bool), z, z, z, z, "stop_token")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    texts = []
    for env in (get_env("calculator"), get_env("arithmetic"), get_env(bench_tool.ENV_NAME, sleep_s=0.0)):
        texts += [m.content for t in env.generate_tasks(60, seed=0) for m in env.demonstration(t)]
    return train_sentencepiece(texts, tmp_path_factory.mktemp("tok"), vocab_size=512)


@pytest.fixture(scope="module")
def pool():
    # The workers import only light env modules: a request's deadline counts from when it reaches a worker,
    # so a worker that first imports this test module (jax, the engine) can overrun it on a loaded machine.
    with EnvWorkerPool(2, env_modules=["rollout_fault_env", bench_tool.MODULE], deadline_margin_s=10.0) as p:
        yield p


def random_params(cfg: ModelConfig, seed: int = 0):
    """Random weights in init_params' tree drawn in numpy (eval_shape compiles nothing)."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        is_norm = "norm" in jax.tree_util.keystr(path)
        x = (1.0 if is_norm else 0.0) + rng.normal(0.0, 0.02 if is_norm else 0.3, leaf.shape)
        return jnp.asarray(x, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, jax.eval_shape(lambda: init_params(cfg, jax.random.key(0))))


def runs(mask) -> list[tuple[int, int, int]]:
    """(value, start, end) of each run of equal values in a 0/1 mask."""
    mask = np.asarray(mask, int)
    cut = [0] + [i for i in range(1, len(mask)) if mask[i] != mask[i - 1]] + [len(mask)]
    return [(int(mask[a]), a, b) for a, b in zip(cut[:-1], cut[1:])]


def check_layout(r, tok, runner):
    """Prompt and each observation are prefilled with gen_mask 0; each turn's generated tokens have 1."""
    tr = r.trajectory
    env = runner.env
    prompt, _ = render_chat([m.to_dict() for m in env.initial_messages(r.task)], tok, TEMPLATE, True)
    segs = runs(tr.gen_mask)
    zeros = [tr.tokens[a:b].tolist() for v, a, b in segs if v == 0]
    ones = [tr.tokens[a:b].tolist() for v, a, b in segs if v == 1]
    observations = [m for m in r.messages if m.role == "tool"]
    assert zeros == [prompt] + [render_turn_suffix(TEMPLATE, m.to_dict(), tok) for m in observations]
    assert [tok.decode(t, skip_special=True) for t in ones] == [m.content for m in r.messages if m.role == "assistant"]
    assert len(ones) == r.turns == len(observations) + 1
    assert segs[0][0] == 0 and segs[-1][0] == 1  # starts with the prompt, ends on a generated turn


def test_calculator_tool_turns_rewards_and_order(tok, pool):
    env = get_env("calculator")
    tasks = env.generate_tasks(3, seed=1)

    def script(rid, turn):
        task = tasks[rid[0]]
        if turn == 0:
            return ('Let me compute.\n<tool_call>{"name": "calculator", "arguments": {"expression": "%s"}}</tool_call>'
                    % task["expression"], "stop_token")
        answer = task["answer"] if rid[1] == 0 else str(Fraction(task["answer"]) + 1)
        return f"<answer>{answer}</answer>", "stop_token"

    engine = ScriptedEngine(tok, script, slots=4)
    runner = RolloutRunner(engine, tok, TEMPLATE, pool, "calculator")
    results = runner.run(tasks, samples_per_task=2)
    assert [(r.task, r.sample_index) for r in results] == [(t, j) for t in tasks for j in range(2)]
    assert engine.most_held == 4 and not engine.rows  # 6 trajectories through 4 slots, all freed
    for r in results:
        assert [m.role for m in r.messages] == ["system", "user", "assistant", "tool", "assistant"]
        assert r.task["answer"] in r.messages[3].content  # the calculator's result came back
        assert (r.turns, r.tool_calls, r.truncated, r.error) == (2, 1, False, None)
        assert r.reward.correct == (r.sample_index == 0) and r.reward.reward == float(r.sample_index == 0)
        check_layout(r, tok, runner)
    s = runner.stats
    assert (s["trajectories"], s["tool_calls"], s["turns"], s["env_steps"]) == (6, 6, 12, 12)
    assert s["generated_tokens"] == sum(r.trajectory.num_generated for r in results)
    assert not [k for k in s if k.startswith(("errors/", "truncated"))]


def test_single_turn_and_truncated_turn(tok, pool):
    env = get_env("arithmetic")
    tasks = env.generate_tasks(2, seed=3)

    def script(rid, turn):  # sample 1 writes the right answer but its turn is cut by the token budget
        return (f"<think>easy</think><answer>{tasks[rid[0]]['answer']}</answer>",
                "stop_token" if rid[1] == 0 else "max_new_tokens")

    submitted = pool.metrics().get("submitted", 0)
    runner = RolloutRunner(ScriptedEngine(tok, script, slots=8), tok, TEMPLATE, pool, "arithmetic")
    results = runner.run(tasks, samples_per_task=2)
    assert pool.metrics()["submitted"] - submitted == 2  # cut turns never reach the environment
    for r in results:
        cut = r.sample_index == 1
        want = (cut, float(not cut), not cut, 1, None)
        assert (r.truncated, r.reward.reward, r.reward.correct, r.turns, r.error) == want
        assert r.reward.errors == (("truncated",) if cut else ())
        check_layout(r, tok, runner)
    assert runner.stats["truncated/max_new_tokens"] == runner.stats["truncated"] == 2


def test_env_faults_cost_only_their_trajectory(tok, pool):
    calls = {0: "boom", 1: "die", 2: "echo"}

    def script(rid, turn):
        k = rid[0]
        if k in calls and turn == 0:
            return '<tool_call>{"name": "%s", "arguments": {}}</tool_call>' % calls[k], "stop_token"
        return "<answer>ok</answer>", "stop_token"

    tasks = [{"k": k} for k in range(4)]
    runner = RolloutRunner(ScriptedEngine(tok, script, slots=4), tok, TEMPLATE, pool, "rollout_fault_test")
    results = runner.run(tasks)
    got = [(r.error, r.reward.reward, r.tool_calls) for r in results]
    assert got == [("tool_error", 0.0, 1), ("worker_died", 0.0, 0), (None, 1.0, 1), (None, 1.0, 0)]
    assert runner.stats["errors/tool_error"] == runner.stats["errors/worker_died"] == 1
    assert runner.stats["trajectories"] == 4
    assert "echoed" in results[2].messages[3].content
    check_layout(results[2], tok, runner)


def test_bad_samples_per_task(tok, pool):
    runner = RolloutRunner(ScriptedEngine(tok, lambda rid, t: ("", "stop_token"), 1), tok, TEMPLATE, pool, "arithmetic")
    with pytest.raises(ValueError, match="samples_per_task"):
        runner.run([{"expression": "1+1", "answer": "2"}], samples_per_task=0)


def test_real_engine_end_to_end(tok, pool):
    """Tiny random model, bench_tool env (any turn ending on a stop id is a tool call, 2 per episode)."""
    cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16,
                      d_ff=64, qk_norm=True, max_seq_len=256)
    params = random_params(cfg)
    ordinary = [i for i in range(tok.vocab_size) if not tok.is_special(i)]
    stops = list(stop_token_ids(TEMPLATE, tok)) + ordinary[::4]  # ~1 in 4 sampled tokens ends the turn
    ecfg = EngineConfig(batch_slots=2, max_len=256, max_new_tokens=8, chunk_steps=4, min_prefill_bucket=128,
                        sampling=SamplingConfig(temperature=1.0))
    engine = DecodeEngine(params, cfg, ecfg, stops, seed=0)
    env_kwargs = {"tool_calls": 2, "sleep_s": 0.0}
    runner = RolloutRunner(engine, tok, TEMPLATE, pool, bench_tool.ENV_NAME, env_kwargs)
    env = get_env(bench_tool.ENV_NAME, **env_kwargs)
    tasks = env.generate_tasks(5, seed=0)
    prompt_len = len(render_chat([m.to_dict() for m in env.initial_messages(tasks[0])], tok, TEMPLATE, True)[0])
    assert prompt_len <= 128, prompt_len  # one prefill token bucket serves prompts and observations
    results = runner.run(tasks)
    assert [r.task for r in results] == tasks and engine.free_slots == 2
    for r in results:
        check_layout(r, tok, runner)
        tr = r.trajectory
        turns = [tr.tokens[a:b] for v, a, b in runs(tr.gen_mask) if v == 1]
        assert all(t[-1] in stops for t in turns[:-1]) and all(1 <= len(t) <= 8 for t in turns)
        assert np.isfinite(tr.logprob[tr.gen_mask]).all() and (tr.logprob[tr.gen_mask] <= 0).all()
        assert (tr.logprob[~tr.gen_mask] == 0).all()
        if r.truncated:
            assert tr.reason == "max_new_tokens" and len(turns[-1]) == 8 and r.reward.reward == 0.0
        else:
            assert turns[-1][-1] in stops and (r.turns, r.tool_calls, r.reward.reward) == (3, 2, 1.0)
    assert any(not r.truncated for r in results)  # full 3-turn episodes happened (fixed seeds)
    assert runner.stats["generated_tokens"] == sum(r.trajectory.num_generated for r in results)
    assert runner.stats["env_steps"] == sum(r.turns - r.truncated for r in results)
