"""Config loading: YAML + key=value overrides into frozen dataclasses; errors name the key."""
from __future__ import annotations

import pytest

from vagent_jax.config import ConfigError, load_config
from vagent_jax.jobs.demo import DemoConfig


def test_demo_yaml_loads_and_overrides(tmp_path):
    over = ["sft.steps=7", "sft.model.n_layers=1", "rl.engine.sampling.top_p=0.9", "rl.loss.mismatch=tis"]
    cfg = load_config(DemoConfig, "configs/demo.yaml", over)
    assert cfg.sft.steps == 7 and cfg.sft.model.n_layers == 1 and cfg.rl.engine.sampling.top_p == 0.9
    assert cfg == load_config(DemoConfig, None, over)


@pytest.mark.parametrize("override,match", [
    ("sft_stepz=3", "unknown config key 'sft_stepz'"),
    ("sft.model.n_layerz=3", "unknown config key 'sft.model.n_layerz'"),
    ("sft.steps=many", "config key 'sft.steps': expected an integer"),
    ("sft.optimizer.lr=[1]", "config key 'sft.optimizer.lr': expected a number"),
    ("rl.engine.sampling.top_p=1.5", "config key 'rl.engine.sampling.top_p'"),
    ("rl.engine.max_new_tokens=5000", "config key 'rl.engine.max_new_tokens'"),
    ("rl.engine.batch_slots=0", "config key 'rl.engine.batch_slots'"),
    ("eval_engine.chunk_steps=0", "config key 'eval_engine.chunk_steps'"),
    ("rl.optimizer.lr=-1", "config key 'rl.optimizer.lr'"),
    ("rl.checkpoint.keep_last=0", "config key 'rl.checkpoint.keep_last'"),
    ("rl.loss.eps_low=2", "config key 'rl.loss.eps_low'"),
    ("rl.rewards.overlong_cache_len=-1", "config key 'rl.rewards.overlong_cache_len'"),
    ("rl.engine.sampling.temperature=0", "config key 'rl.engine.sampling.temperature'"),
    ("rl.engine.sampling.top_p=0.9",
     "config key 'rl.engine.sampling' \\(with 'rl.loss.mismatch', 'rl.allow_truncated_sampling'\\): top_p=0.9"),
    ("sft.model.n_kv_heads=3", "config key 'sft.model.n_kv_heads'"),
    ("sft.model.vocab_size=100", "config key 'sft.model.vocab_size'"),
    ("sft.steps=1.5", "config key 'sft.steps': expected an integer"),
    ("sft.steps=true", "config key 'sft.steps': expected an integer"),
])
def test_bad_values_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(DemoConfig, "configs/demo.yaml", [override])


def test_numbers_are_read_by_the_field_type(tmp_path):
    """`1e-7` is a string to YAML 1.1 (no dot): a float field still reads it, on the command line and in a file."""
    cfg = load_config(DemoConfig, "configs/demo.yaml", ["rl.optimizer.lr=1e-7", "sft.steps=1e3",
                                                         "rl.engine.sampling.top_p=1"])
    assert cfg.rl.optimizer.lr == 1e-7 and cfg.sft.steps == 1000 and isinstance(cfg.sft.steps, int)
    f = tmp_path / "c.yaml"
    f.write_text("rl:\n  optimizer:\n    lr: 1e-7\n  loss:\n    eps_high: 2.8E-1\n")
    loaded = load_config(DemoConfig, f)
    assert loaded.rl.optimizer.lr == 1e-7 and loaded.rl.loss.eps_high == 0.28
    allowed = load_config(DemoConfig, None, ["rl.engine.sampling.top_p=0.9", "rl.allow_truncated_sampling=true"])
    assert allowed.rl.engine.sampling.top_p == 0.9


def test_scoped_checks_made_after_loading_name_the_full_key():
    from vagent_jax.config import config_scope
    from vagent_jax.engine import EngineConfig, SamplingConfig

    with pytest.raises(ConfigError, match="config key 'rl.engine.sampling.top_k': 99 exceeds"):
        with config_scope("rl"), config_scope("engine"):
            EngineConfig(sampling=SamplingConfig(top_k=99)).validate(vocab_size=64)


def test_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(DemoConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at top level"):
        load_config(DemoConfig, bad)
