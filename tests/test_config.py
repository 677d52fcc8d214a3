"""Config loading: YAML + key=value overrides into frozen dataclasses; errors name the key."""
from __future__ import annotations

import pytest

from vagent_jax.config import ConfigError, load_config
from vagent_jax.demo import DemoConfig


def test_demo_yaml_loads_and_overrides(tmp_path):
    cfg = load_config(DemoConfig, "configs/demo.yaml", ["sft_steps=7", "model.n_layers=1", "engine.sampling.top_p=0.9"])
    assert cfg.sft_steps == 7 and cfg.model.n_layers == 1 and cfg.engine.sampling.top_p == 0.9
    assert cfg == load_config(DemoConfig, None, ["sft_steps=7", "model.n_layers=1", "engine.sampling.top_p=0.9"])


@pytest.mark.parametrize("override,match", [
    ("sft_stepz=3", "unknown config key 'sft_stepz'"),
    ("model.n_layerz=3", "unknown config key 'model.n_layerz'"),
    ("sft_steps=many", "config key 'sft_steps': expected an integer"),
    ("optimizer.lr=[1]", "config key 'optimizer.lr': expected a number"),
    ("engine.sampling.top_p=1.5", "config key 'top_p'"),
    ("engine.max_new_tokens=5000", "engine.max_new_tokens"),
    ("model.n_kv_heads=3", "n_kv_heads"),
    ("model.vocab_size=100", "model.vocab_size"),
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
