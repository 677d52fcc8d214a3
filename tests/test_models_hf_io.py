"""HF checkpoint loading and saving: multi-file index, sharded load, exact round trip, bad input."""
from __future__ import annotations

import json
import shutil

import numpy as np
import jax
import pytest
from safetensors.numpy import load_file, save_file

from hf_fixtures import make_hf_checkpoint
from vagent_jax.config import ConfigError
from vagent_jax.models.hf_io import load_hf_checkpoint, save_hf_checkpoint
from vagent_jax.models.safetensors_file import CheckpointError
from vagent_jax.sharding import MeshConfig, make_mesh


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen2")
    make_hf_checkpoint("qwen2", path)
    return path


@pytest.fixture(scope="module")
def sharded_dir(tmp_path_factory):
    """A llama checkpoint split over several files with model.safetensors.index.json."""
    path = tmp_path_factory.mktemp("llama_sharded")
    model = make_hf_checkpoint("llama", path / "single")
    model.save_pretrained(path / "multi", safe_serialization=True, max_shard_size="40KB")
    assert (path / "multi" / "model.safetensors.index.json").is_file()
    return path / "multi"


def _flat(params):
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(params)}


def test_multi_file_checkpoint_loads_sharded_over_8_devices(sharded_dir):
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    cfg1, p1 = load_hf_checkpoint(sharded_dir)
    cfg8, p8 = load_hf_checkpoint(sharded_dir, mesh=mesh)
    assert cfg1 == cfg8
    wq = p8["layers"]["wq"]  # [L, D, H, hd] -> embed over fsdp, heads over tensor
    assert wq.sharding.spec[1] == "fsdp" and wq.sharding.spec[2] == "tensor"
    shard_shapes = {s.data.shape for s in wq.addressable_shards}
    assert shard_shapes == {(wq.shape[0], wq.shape[1] // 2, wq.shape[2] // 2, wq.shape[3])}
    f1, f8 = _flat(p1), _flat(p8)
    assert f1.keys() == f8.keys()
    for k in f1:
        np.testing.assert_array_equal(f1[k], f8[k], err_msg=k)


def test_save_round_trip_is_exact(qwen2_dir, tmp_path):
    cfg, params = load_hf_checkpoint(qwen2_dir)
    save_hf_checkpoint(tmp_path / "out", params, cfg)
    orig = load_file(str(qwen2_dir / "model.safetensors"))
    again = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert orig.keys() == again.keys()
    for k in orig:
        np.testing.assert_array_equal(orig[k], again[k], err_msg=k)
    cfg2, params2 = load_hf_checkpoint(tmp_path / "out")
    assert cfg2 == cfg
    save_hf_checkpoint(tmp_path / "multi", params, cfg, max_shard_bytes=30_000)
    assert (tmp_path / "multi" / "model.safetensors.index.json").is_file()
    _, params3 = load_hf_checkpoint(tmp_path / "multi")
    for (k, a), b in zip(_flat(params).items(), _flat(params3).values()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_saved_checkpoint_loads_in_transformers(qwen2_dir, tmp_path):
    import torch
    import transformers

    cfg, params = load_hf_checkpoint(qwen2_dir)
    save_hf_checkpoint(tmp_path / "out", params, cfg)
    a = transformers.AutoModelForCausalLM.from_pretrained(qwen2_dir)
    b = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    x = torch.arange(10)[None]
    with torch.no_grad():
        assert torch.equal(a(x).logits, b(x).logits)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _edit_tensors(path, fn):
    f = path / "model.safetensors"
    tensors = load_file(str(f))
    fn(tensors)
    save_file(tensors, str(f))


def test_missing_tensor_is_named(qwen2_dir, tmp_path):
    d = _copy(qwen2_dir, tmp_path / "c")
    _edit_tensors(d, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensor 'model\.layers\.1\.mlp\.up_proj\.weight'"):
        load_hf_checkpoint(d)


def test_extra_tensor_is_named(qwen2_dir, tmp_path):
    d = _copy(qwen2_dir, tmp_path / "c")
    _edit_tensors(d, lambda t: t.__setitem__("model.layers.0.mystery.weight", np.zeros(3, np.float32)))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: unexpected tensor 'model\.layers\.0\.mystery"):
        load_hf_checkpoint(d)


def test_wrong_shape_is_named(qwen2_dir, tmp_path):
    d = _copy(qwen2_dir, tmp_path / "c")
    _edit_tensors(d, lambda t: t.__setitem__("model.norm.weight", np.ones(65, np.float32)))
    with pytest.raises(CheckpointError, match=r"tensor 'model\.norm\.weight' has shape \[65\], expected \[64\]"):
        load_hf_checkpoint(d)


def test_unknown_architecture_is_named(qwen2_dir, tmp_path):
    d = _copy(qwen2_dir, tmp_path / "c")
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["MambaForCausalLM"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"config\.json: key 'architectures' = \['MambaForCausalLM'\]"):
        load_hf_checkpoint(d)


@pytest.mark.parametrize("damage", ["truncate", "garbage_header"])
def test_corrupt_file_is_named(qwen2_dir, tmp_path, damage):
    d = _copy(qwen2_dir, tmp_path / "c")
    f = d / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\xff" * 16 + data[16:])
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_hf_checkpoint(d)


def test_index_pointing_to_missing_file(sharded_dir, tmp_path):
    d = _copy(sharded_dir, tmp_path / "c")
    victim = sorted(d.glob("model-*.safetensors"))[-1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=victim.name):
        load_hf_checkpoint(d)
