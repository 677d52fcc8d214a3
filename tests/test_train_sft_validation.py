"""SFT's evidence-based stop: the pure stopping rule; the run stops at the rule's step, logs the curve,
holds validation tasks out of the demonstrations, and a run interrupted (during a validation, too)
resumes to the same stop and bitwise the same parameters; bad settings are named before training.
SFT on two seeds reduces the loss at tiny sizes (a recipe that learns on one seed only is caught here)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
import pytest

from vagent_jax.config import ConfigError, load_config
import vagent_jax.jobs.sft as sft_run
from vagent_jax.data.task_source import train_tasks
from vagent_jax.jobs.sft import SFTConfig, demo_conversations, run_sft, validation_tasks
from vagent_jax.sharding import MeshConfig, make_mesh
from vagent_jax.train.metrics_writer import read_jsonl_scalars
from vagent_jax.train.policy_dir import load_policy
from vagent_jax.train.sft_validation import SFTValidationConfig, should_stop

TINY = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.n_kv_heads=1", "model.head_dim=16",
        "model.d_ff=64", "tasks.num_tasks=48", "batch_size=4", "seq_len=192", "log_every=1", "num_devices=1",
        "optimizer.lr=0.003", "optimizer.warmup_steps=2", "optimizer.schedule=constant"]


def _curve(*rates: float, every: int = 50) -> list[tuple[int, float]]:
    return [(every * (i + 1), r) for i, r in enumerate(rates)]


@pytest.mark.parametrize("rates, cfg, stop", [
    ((0.1, 0.3, 0.5), SFTValidationConfig(patience=2), False),  # still improving
    ((0.1, 0.5, 0.4, 0.5), SFTValidationConfig(patience=2), True),  # two points not above the best 0.5
    ((0.1, 0.5, 0.4), SFTValidationConfig(patience=2), False),  # only one point since the best
    ((0.1, 0.5, 0.4, 0.51), SFTValidationConfig(patience=2), False),  # 0.51 beats the best
    ((0.1, 0.5, 0.4, 0.51), SFTValidationConfig(patience=2, min_delta=0.02), True),  # ... not by min_delta
    ((0.0, 0.0, 0.0, 0.0), SFTValidationConfig(patience=2), False),  # nothing learned yet: keep going
    ((0.05, 0.05, 0.05), SFTValidationConfig(patience=1, min_pass_rate=0.1), False),
    ((0.3, 0.2, 0.2), SFTValidationConfig(patience=2, min_steps=200), False),  # newest point at step 150
    ((0.3, 0.2, 0.2, 0.2), SFTValidationConfig(patience=2, min_steps=200), True),
])
def test_stopping_rule(rates, cfg, stop) -> None:
    assert should_stop(_curve(*rates), cfg) is stop


def _cfg(tmp_path: Path, name: str, extra: list[str]) -> SFTConfig:
    return load_config(SFTConfig, None, [*TINY, f"out_dir={tmp_path / name}", f"tasks.data_dir={tmp_path / 'data'}",
                                         *extra])


def _scripted(rates: dict[int, float], calls: list[int]):
    def fake(params, step, like, tasks, env, cfg, seed, env_modules=(), env_kwargs=None):
        calls.append(step)
        assert len(tasks) == cfg.tasks and like.model.d_model == 32
        return rates[step]
    return fake


def _params(run_dir: Path) -> list[np.ndarray]:
    mesh = make_mesh(MeshConfig(), devices=jax.devices()[:1])
    return [np.asarray(x) for x in jax.tree.leaves(load_policy(run_dir, mesh).params)]


VAL = ["steps=40", "validation.every=4", "validation.tasks=8", "validation.patience=2", "save_every=4"]
RATES = {4: 0.2, 8: 0.5, 12: 0.4, 16: 0.45, 20: 0.9, 24: 0.9}  # the rule stops at 16


def test_run_stops_at_the_rules_step_and_resumes_to_it(tmp_path, monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(sft_run, "validation_pass_rate", _scripted(RATES, calls))
    full = run_sft(_cfg(tmp_path, "full", VAL))
    assert full["steps"] == 16 and full["stopped_early"] and calls == [4, 8, 12, 16]
    assert full["validation_curve"] == [(s, RATES[s]) for s in (4, 8, 12, 16)]
    logged = read_jsonl_scalars(tmp_path / "full" / "tb")["sft/val_pass_rate"]
    assert [(s, v) for s, v in logged] == full["validation_curve"]
    assert load_policy(tmp_path / "full", make_mesh(MeshConfig(), devices=jax.devices()[:1])).step == 16

    # interrupted inside step 12's validation: the save at 12 lacks that point; resume re-evaluates it
    calls.clear()

    def interrupt_at_12(params, step, *a, **k):
        calls.append(step)
        if step == 12:
            raise KeyboardInterrupt
        return RATES[step]
    monkeypatch.setattr(sft_run, "validation_pass_rate", interrupt_at_12)
    with pytest.raises(KeyboardInterrupt):
        run_sft(_cfg(tmp_path, "cut", VAL))
    assert (tmp_path / "cut" / "checkpoints" / "12").is_dir() and calls == [4, 8, 12]
    calls.clear()
    monkeypatch.setattr(sft_run, "validation_pass_rate", _scripted(RATES, calls))
    resumed = run_sft(_cfg(tmp_path, "cut", VAL), resume=True)
    assert calls == [12, 16] and resumed["steps"] == 16 and resumed["validation_curve"] == full["validation_curve"]
    for a, b in zip(_params(tmp_path / "full"), _params(tmp_path / "cut")):
        np.testing.assert_array_equal(a, b)
    # resuming a run that has stopped trains and validates nothing more
    calls.clear()
    again = run_sft(_cfg(tmp_path, "cut", VAL), resume=True)
    assert calls == [] and again["steps"] == 16


def test_validation_tasks_are_held_out_of_the_demonstrations(tmp_path) -> None:
    cfg = _cfg(tmp_path, "held", VAL)
    held = validation_tasks(cfg)
    demos = demo_conversations(cfg)
    assert len(held) == 8 and len(demos) == 48 - 8
    prompts = {m["content"] for chat in demos for m in chat if m["role"] == "user"}
    assert not any(f"What is {t['expression']}?" in prompts for t in held)
    off = dataclasses.replace(cfg, validation=SFTValidationConfig())
    assert validation_tasks(off) == [] and len(demo_conversations(off)) == 48


def test_no_demonstration_repeats_a_validation_prompt(tmp_path) -> None:
    # 3000 of the 8100 two-digit products: some of the last 8 tasks' questions also occur earlier
    cfg = _cfg(tmp_path, "many", [*VAL, "tasks.num_tasks=3000"])
    held = {f"What is {t['expression']}?" for t in validation_tasks(cfg)}
    source = train_tasks(cfg.tasks)
    repeats = sum(f"What is {source[i]['expression']}?" in held for i in range(len(source) - 8))
    assert repeats > 0, "no repeated question: the test would not see the filter"
    demos = demo_conversations(cfg)
    assert len(demos) == 3000 - 8 - repeats
    assert not {m["content"] for chat in demos for m in chat if m["role"] == "user"} & held


@pytest.mark.parametrize("extra, key", [
    (["validation.every=-1"], "validation.every"),
    (["validation.every=4", "validation.tasks=48"], "validation.tasks"),
    (["validation.every=4", "validation.tasks=8", "validation.engine.max_len=999"], "validation.engine.max_len"),
    (["validation.patience=0"], "validation.patience"),
    (["validation.min_pass_rate=1.0"], "validation.min_pass_rate"),
])
def test_bad_validation_settings_are_named_before_training(tmp_path, extra, key) -> None:
    with pytest.raises(ConfigError) as e:
        run_sft(_cfg(tmp_path, "bad", extra))
    assert key in str(e.value)
    assert not (tmp_path / "bad" / "checkpoints").exists()


@pytest.mark.parametrize("seed", [0, 1])
def test_sft_reduces_the_loss_on_two_seeds(tmp_path, seed) -> None:
    """At tiny sizes, 40 steps must take the loss well below its start on each seed (measured: from ~5.5 to
    under 2.0 on seeds 0 and 1); a recipe change that learns on one seed only fails here."""
    summary = run_sft(_cfg(tmp_path, f"s{seed}", ["steps=40", f"seed={seed}"]))
    losses = [v for _, v in read_jsonl_scalars(tmp_path / f"s{seed}" / "tb")["sft/loss"]]
    assert summary["steps"] == 40 and len(losses) == 40
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3]), losses
