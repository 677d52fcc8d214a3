"""`vagent sft` and `vagent rl` on a mixture: SFT demonstrations from every member, RL prompts split by the
schedule's weights, per-environment and per-criterion tags, the weights in the checkpoint, per-env eval."""
from __future__ import annotations

from pathlib import Path

import pytest

from vagent_jax.config import ConfigError, load_config
from vagent_jax.jobs.eval import EvalConfig, run_eval
from vagent_jax.jobs.rl import RLConfig, run_rl
from vagent_jax.jobs.sft import SFTConfig, run_sft
from vagent_jax.train.metrics_writer import read_scalars

MIX = ("tasks.mix=[{env: calculator, name: calc, weight: 1, final_weight: 0}, "
       "{env: reasoning_gym, weight: 0, final_weight: 1, config: {dataset: chain_sum, config: "
       "{min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}}, "
       "rubric: [{name: correct, grader: verifier}, {name: short, grader: length, args: {max_chars: 40}, weight: 0.5}]}]")
TINY_MODEL = ["tokenizer.vocab_size=400", "model.vocab_size=416", "model.d_model=32", "model.n_layers=1",
              "model.n_heads=2", "model.n_kv_heads=1", "model.head_dim=16", "model.d_ff=64", "model.max_seq_len=256"]
ENGINE = ["engine.batch_slots=16", "engine.max_len=224", "engine.max_new_tokens=16", "engine.chunk_steps=8"]


@pytest.fixture(scope="module")
def mix_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mix_sft")
    cfg = load_config(SFTConfig, None, [MIX, f"out_dir={out}", f"tasks.data_dir={out / 'data'}", "tasks.num_tasks=48",
                                        "steps=4", "batch_size=8", "seq_len=224", "optimizer.total_steps=4",
                                        "optimizer.warmup_steps=0", "num_devices=1", "save_every=4", *TINY_MODEL])
    run_sft(cfg)
    return out


def test_rl_on_a_mixture_logs_per_env_rubric_and_weights(mix_policy: Path, tmp_path: Path) -> None:
    cfg = load_config(RLConfig, None, [MIX, "tasks.mix_schedule.kind=linear", "tasks.mix_schedule.ramp_steps=2",
                                       "tasks.num_tasks=32", f"tasks.data_dir={mix_policy / 'data'}",
                                       f"init_from={mix_policy}", f"out_dir={tmp_path / 'rl'}", "steps=3",
                                       "prompts_per_step=4", "group_size=2", "num_devices=1", "env_workers=1",
                                       "dynamic_sampling=false", "save_every=1", *ENGINE])
    run_rl(cfg)
    s = read_scalars(tmp_path / "rl" / "tb")
    w_calc = [v for _, v in s["mix/weight/calc"]]
    assert w_calc == [1.0, 0.5, 0.0]  # the linear ramp over 2 steps
    assert [v for _, v in s["env/calc/rollouts"]][:2] == [8.0, 4.0]  # 4 prompts x 2 samples, then half
    assert [v for _, v in s["env/chain_sum/rollouts"]] == [4.0, 8.0]  # no rollouts at weight 0: no tag at step 1
    for tag in ("reward_mean", "pass_rate", "sampling_entropy", "response_length_mean", "tool_calls"):
        assert f"env/chain_sum/{tag}" in s
    # Rubric scores come only from graded (finished) episodes; a truncated one is reward 0, ungraded. This
    # 4-step SFT policy rarely stops within 16 tokens (with the inverse-CDF sampler, in none of these
    # rollouts), so the tags must be there exactly when some chain_sum rollout finished. Their values are
    # hand-checked in test_train_mix_metrics.py and the grading in test_envs_rubric.py.
    finished = any(v < 1.0 for _, v in s["env/chain_sum/truncation_rate"])
    assert ("rubric/short/mean" in s) == finished and ("rubric/correct/pass_rate" in s) == finished
    report = run_eval(load_config(EvalConfig, None, [
        MIX, f"tasks.data_dir={mix_policy / 'data'}", "tasks.num_tasks=32", "num_tasks=4", "k=2", "num_devices=1", "env_workers=1",
        f"out={tmp_path / 'eval.json'}", "deepconf.online=false", "genselect.enabled=false", *ENGINE]), tmp_path / "rl")
    assert {k: v["tasks"] for k, v in report["per_env"].items()} == {"calc": 2, "chain_sum": 2}


def test_a_judge_criterion_needs_an_existing_judge_directory(tmp_path: Path) -> None:
    judged = "tasks.mix=[{env: calculator, rubric: [{name: polite, judge: 'Is it polite?'}]}]"
    with pytest.raises(ConfigError, match="'judge.init_from'"):
        load_config(RLConfig, None, [judged, f"init_from={tmp_path}"])
    with pytest.raises(ConfigError, match="'judge.init_from'.*does not exist"):
        load_config(RLConfig, None, [judged, f"init_from={tmp_path}", f"judge.init_from={tmp_path / 'nope'}"])
