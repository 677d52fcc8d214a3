"""An HF model directory as init_from / --checkpoint: config, tokenizer and template come from it, a
contradicting `model:` key or template is named, weights land in the run's shardings, and bad input (see
BAD_INPUT) stops with the file and key or tensor named before any array is built or program compiled.
A run directory restores its params only."""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from hf_fixtures import make_hf_model_dir, make_hf_tokenizer
from vagent_jax.cli import main
from vagent_jax.config import ConfigError
from vagent_jax.jobs import sft as sft_run
from vagent_jax.models import hf_io
from vagent_jax.models.config import ModelConfig
from vagent_jax.sharding import MeshConfig, make_mesh
from vagent_jax.train import policy_dir
from vagent_jax.train.checkpoint import Checkpointer
from vagent_jax.train.optimizer import OptimizerConfig
from vagent_jax.train.policy_dir import load_policy
from vagent_jax.train.train_state import create_train_state, param_shardings

DEFAULT = sft_run.SFTConfig().model


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("llama_hf")
    make_hf_model_dir("llama", path)
    return path


@pytest.fixture(scope="module")
def sharded_dir(hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model split over several safetensors files with an index."""
    import transformers

    path = tmp_path_factory.mktemp("llama_multi")
    transformers.AutoModelForCausalLM.from_pretrained(hf_dir).save_pretrained(path, max_shard_size="40KB")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(hf_dir / name, path / name)
    return path


def _one_device():
    return make_mesh(MeshConfig(), devices=jax.devices()[:1])


def test_policy_comes_from_the_hf_dir_in_the_run_shardings(sharded_dir: Path) -> None:
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    policy = load_policy(sharded_dir, mesh)
    assert policy.model.family == "llama" and policy.model.rope_scaling.rope_type == "llama3"
    assert policy.template == "chatml" and policy.tokenizer.source == str(sharded_dir / "tokenizer.json")
    assert policy.step == 0 and policy.tokenizer_path == sharded_dir
    want = param_shardings(policy.model, mesh)
    for (path, a), s in zip(jax.tree_util.tree_leaves_with_path(policy.params), jax.tree.leaves(want)):
        assert a.sharding.is_equivalent_to(s, a.ndim), jax.tree_util.keystr(path)
    single = load_policy(sharded_dir, _one_device()).params
    for a, b in zip(jax.tree.leaves(policy.params), jax.tree.leaves(single)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_model_section_sets_run_fields_and_a_contradiction_is_named(hf_dir: Path) -> None:
    mine = DEFAULT.__class__(**{**vars(DEFAULT), "remat": "full", "param_dtype": "bfloat16"})
    policy = load_policy(hf_dir, _one_device(), expect_model=mine, model_default=DEFAULT)
    assert policy.model.remat == "full" and policy.model.d_model == 64
    assert policy.params["embed"].dtype == jax.numpy.bfloat16
    wrong = DEFAULT.__class__(**{**vars(DEFAULT), "d_model": 32})
    with pytest.raises(ConfigError, match=r"config\.json: config key 'model\.d_model' = 32 contradicts the "
                                          r"checkpoint \(hidden_size = 64\)"):
        load_policy(hf_dir, _one_device(), expect_model=wrong, model_default=DEFAULT)
    with pytest.raises(ConfigError, match=r"'model\.rope_scaling\.factor' = 2\.0"):
        scaled = dict(vars(policy.model.rope_scaling), factor=2.0)
        load_policy(hf_dir, _one_device(), expect_model=ModelConfig(
            **{**vars(DEFAULT), "rope_scaling": policy.model.rope_scaling.__class__(**scaled)}), model_default=DEFAULT)


def test_template_from_tokenizer_config_or_the_config(hf_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'tokenizer\.template': 'llama3' contradicts the chatml chat template"):
        load_policy(hf_dir, _one_device(), template="llama3")
    bare = shutil.copytree(hf_dir, tmp_path / "bare")
    make_hf_tokenizer(bare, template=None, regex="llama")
    with pytest.raises(ConfigError, match=r"tokenizer_config\.json has no chat template.*set tokenizer\.template"):
        load_policy(bare, _one_device())
    assert load_policy(bare, _one_device(), template="llama3").template == "llama3"


def _edit_config(d: Path, fn) -> None:
    cfg = json.loads((d / "config.json").read_text())
    fn(cfg)
    (d / "config.json").write_text(json.dumps(cfg))


def _edit_tensor(d: Path, name: str, value) -> None:
    f = next(p for p in d.glob("*.safetensors") if name in load_file(str(p)))
    tensors = load_file(str(f))
    tensors[name] = value(tensors[name])
    save_file(tensors, str(f))


BAD_INPUT = {
    "architecture": (lambda d: _edit_config(d, lambda c: c.update(architectures=["MambaForCausalLM"])),
                     r"config\.json: key 'architectures' = \['MambaForCausalLM'\] is not supported"),
    "sliding_window": (lambda d: _edit_config(d, lambda c: c.update(use_sliding_window=True)),
                       r"config\.json: key 'use_sliding_window' = true is not supported"),
    "missing_key": (lambda d: _edit_config(d, lambda c: c.pop("hidden_size")),
                    r"config\.json: missing key 'hidden_size'"),
    "missing_shard": (lambda d: sorted(d.glob("model-*.safetensors"))[-1].unlink(),
                      r"model\.safetensors\.index\.json: tensor '.*' points to missing file '.*model-\d+-of-\d+\.safetensors'"),
    "shape": (lambda d: _edit_tensor(d, "model.norm.weight", lambda a: np.ones(65, a.dtype)),
              r"model-\d+-of-\d+\.safetensors: tensor 'model\.norm\.weight' has shape \[65\], expected \[64\]"),
    "dtype": (lambda d: _edit_tensor(d, "model.layers.1.mlp.up_proj.weight", lambda a: a.astype(np.int32)),
              r"\.safetensors: tensor 'model\.layers\.1\.mlp\.up_proj\.weight' has dtype int32"),
    "vocab": (lambda d: _edit_config(d, lambda c: c.update(vocab_size=200)),
              r"tokenizer .*tokenizer\.json has 3\d\d ids but the model \(.*config\.json vocab_size\) has only 200"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_stops_naming_it_before_any_array(case: str, sharded_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    damage, message = BAD_INPUT[case]
    d = shutil.copytree(sharded_dir, tmp_path / "c")
    damage(d)
    built = []
    monkeypatch.setattr(hf_io.jax, "make_array_from_callback", lambda *a, **k: built.append(a))
    with pytest.raises((ConfigError, ValueError)) as err:
        load_policy(d, _one_device())
    assert built == [], "arrays were built before the input was rejected"
    assert re.search(message, str(err.value)), str(err.value)


def test_sft_cli_names_a_contradicting_key_before_compiling(hf_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    sys.path.insert(0, str(Path(__file__).parent))

    def compiled(*a, **k):
        raise AssertionError("compiled before the input was checked")

    monkeypatch.setattr(sft_run, "make_sft_step", compiled)
    monkeypatch.setattr(sft_run, "train_state_from_params", compiled)
    cfg = tmp_path / "sft.yaml"
    args = ["sft", str(cfg), f"out_dir={tmp_path / 'o'}", "tasks.env=coin_test", "tasks.env_modules=[vagent_jax.testing]",
            "tasks.num_tasks=8", f"tasks.data_dir={tmp_path / 'data'}", "seq_len=64", "num_devices=1"]
    cfg.write_text("model:\n  n_kv_heads: 4\n")
    assert main([*args, f"init_from={hf_dir}"]) == 2
    assert "'model.n_kv_heads' = 4 contradicts the checkpoint (num_key_value_heads = 2)" in capsys.readouterr().err
    cfg.write_text(f"tokenizer:\n  path: {hf_dir}\n")
    assert main([*args, f"init_from={hf_dir}"]) == 2
    assert "'tokenizer.path': init_from brings its own tokenizer" in capsys.readouterr().err
    assert main([*args, "init_from=gs://bucket/Llama", "tokenizer.path=null"]) == 2
    assert "mount the bucket" in capsys.readouterr().err
    bad = shutil.copytree(hf_dir, tmp_path / "bad")
    _edit_tensor(bad, "model.layers.0.self_attn.q_proj.weight", lambda a: a.astype(np.float16)[:, :3])
    assert main([*args, f"init_from={bad}", "tokenizer.path=null"]) == 2
    assert "tensor 'model.layers.0.self_attn.q_proj.weight' has shape [64, 3]" in capsys.readouterr().err


def test_run_dir_restores_params_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = ModelConfig(vocab_size=320, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64)
    mesh = _one_device()
    state = create_train_state(model, OptimizerConfig(), mesh, jax.random.key(0))
    tok_dir = tmp_path / "run" / "tokenizer"
    make_hf_tokenizer(tok_dir)
    policy_dir.write_policy_meta(tmp_path / "run", model, OptimizerConfig(), "chatml", tok_dir)
    with Checkpointer(tmp_path / "run" / "checkpoints") as ckpt:
        ckpt.save(7, state, force=True)
    seen = []
    restore = Checkpointer.restore_params
    monkeypatch.setattr(Checkpointer, "restore", lambda *a, **k: pytest.fail("the whole train state was restored"))
    monkeypatch.setattr(Checkpointer, "restore_params", lambda self, *a: seen.append(restore(self, *a)) or seen[-1])
    policy = load_policy(tmp_path / "run", mesh)
    assert policy.step == 7 and len(seen) == 1
    assert jax.tree.structure(seen[0]) == jax.tree.structure(state.params)  # no optimizer moments
    for a, b in zip(jax.tree.leaves(policy.params), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_run_settings_left_at_default_keep_the_checkpoints() -> None:
    import dataclasses

    from vagent_jax.models.hf_dir import merge_model_config

    found = dataclasses.replace(DEFAULT, d_model=64, remat="full", dtype="bfloat16")
    assert merge_model_config(found, DEFAULT, DEFAULT, "policy.json") == found  # an SFT recipe with no model keys
    mine = dataclasses.replace(DEFAULT, remat="dots")
    assert merge_model_config(found, mine, DEFAULT, "policy.json") == dataclasses.replace(found, remat="dots")
    strict = dataclasses.replace(found, remat="none")  # eval's `model:` (no defaults): run settings as given
    assert merge_model_config(found, strict, None, "policy.json").remat == "none"


def test_eval_and_distill_take_an_hf_dir_as_checkpoint(hf_dir: Path) -> None:
    from vagent_jax.eval.policy_rollouts import load_checked_policy
    from vagent_jax.engine import EngineConfig

    policy = load_checked_policy(hf_dir, MeshConfig(), 1, None, EngineConfig(batch_slots=2, max_len=64,
                                                                             max_new_tokens=8, chunk_steps=4))
    assert policy.model.family == "llama" and policy.template == "chatml"
    with pytest.raises(ValueError, match="engine.max_len"):
        load_checked_policy(hf_dir, MeshConfig(), 1, None, EngineConfig(batch_slots=2, max_len=256,
                                                                       max_new_tokens=8, chunk_steps=4))


def test_rl_starts_from_an_hf_dir(hf_dir: Path, tmp_path: Path) -> None:
    from vagent_jax.config import load_config
    from vagent_jax.jobs.rl import RLConfig, run_rl

    sys.path.insert(0, str(Path(__file__).parent))
    out = tmp_path / "rl"
    run_rl(load_config(RLConfig, None, [
        f"init_from={hf_dir}", f"out_dir={out}", "tasks.env=coin_test", "tasks.env_modules=[vagent_jax.testing]",
        "tasks.num_tasks=16", f"tasks.data_dir={tmp_path / 'data'}", "steps=1", "prompts_per_step=2",
        "group_size=2", "engine.batch_slots=4", "engine.max_len=96", "engine.max_new_tokens=8",
        "engine.chunk_steps=8", "env_workers=1", "num_devices=1", "max_rounds=1", "dynamic_sampling=false"]))
    _, _, template, tok_path = policy_dir.read_policy_meta(out)
    assert template == "chatml" and tok_path == hf_dir.absolute()
    policy = load_policy(out, _one_device())
    assert policy.step == 1 and policy.model == load_policy(hf_dir, _one_device()).model
