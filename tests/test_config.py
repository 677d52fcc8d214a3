"""Config loading: YAML + key=value overrides into frozen dataclasses; errors name the key."""
from __future__ import annotations

import pytest

from vagent_jax.config import ConfigError, load_config
from vagent_jax.demo import DemoConfig


def test_demo_yaml_loads_and_overrides(tmp_path):
    over = ["sft.steps=7", "sft.model.n_layers=1", "rl.engine.sampling.top_p=0.9"]
    cfg = load_config(DemoConfig, "configs/demo.yaml", over)
    assert cfg.sft.steps == 7 and cfg.sft.model.n_layers == 1 and cfg.rl.engine.sampling.top_p == 0.9
    assert cfg == load_config(DemoConfig, None, over)


@pytest.mark.parametrize("override,match", [
    ("sft_stepz=3", "unknown config key 'sft_stepz'"),
    ("sft.model.n_layerz=3", "unknown config key 'sft.model.n_layerz'"),
    ("sft.steps=many", "config key 'sft.steps': expected an integer"),
    ("sft.optimizer.lr=[1]", "config key 'sft.optimizer.lr': expected a number"),
    ("rl.engine.sampling.top_p=1.5", "config key 'top_p'"),
    ("rl.engine.max_new_tokens=5000", "engine.max_new_tokens"),
    ("sft.model.n_kv_heads=3", "n_kv_heads"),
    ("sft.model.vocab_size=100", "model.vocab_size"),
])
def test_bad_values_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(DemoConfig, "configs/demo.yaml", [override])


def test_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(DemoConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at top level"):
        load_config(DemoConfig, bad)
