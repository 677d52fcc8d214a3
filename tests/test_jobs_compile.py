"""AOT compile for TPU topologies on CPU (libtpu compile-only): topology names, model resolution, shape
checks before compile, a tiny SFT and RL run compiled for v5e:2x2 with memory/cost reported, the
not-fit exit, and (slow) every pod recipe under configs/pods compiled for its slice and fitting."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # other test processes may hold libtpu's lock

from vagent_jax.aot_inputs import abstract_train_state, per_device_bytes  # noqa: E402
from vagent_jax.aot_report import decode_model_flops, format_markdown, format_table, train_model_flops  # noqa: E402
from vagent_jax.cli import main  # noqa: E402
from vagent_jax.config import ConfigError, from_dict, load_config  # noqa: E402
from vagent_jax.jobs import compile as aot_compile  # noqa: E402
from vagent_jax.jobs.compile import (build_mesh, check_fits, compile_config, compile_file, config_kind,  # noqa: E402
                                    resolve_model)
from vagent_jax.jobs.rl import RLConfig  # noqa: E402
from vagent_jax.jobs.sft import SFTConfig  # noqa: E402
from vagent_jax.models.config import PRESETS, ModelConfig, from_hf_config, to_hf_config  # noqa: E402
from vagent_jax.tpu_topology import GiB, parse_topology, topology_devices  # noqa: E402
from vagent_jax.train.optimizer import OptimizerConfig  # noqa: E402
from vagent_jax.train.policy_dir import write_policy_meta  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(vocab_size=256, d_model=64, n_layers=1, n_heads=2, n_kv_heads=2, head_dim=32, d_ff=128,
            max_seq_len=128, dtype="bfloat16")
# (recipe, topology, --model preset or None)
RECIPES = [("configs/pods/llama3.1-8b_sft_v5e-32.yaml", "v5e-32", "llama3.1-8b"),
           ("configs/pods/qwen2.5-7b_sft_v5p-64.yaml", "v5p-64", "qwen2.5-7b"),
           ("configs/pods/qwen2.5-7b_dapo_v5p-64.yaml", "v5p-64", "qwen2.5-7b"),
           ("configs/pods/qwen2.5-32b_dapo_v5p-256.yaml", "v5p-256", "qwen2.5-32b")]


def tiny_sft(**kw) -> SFTConfig:
    base = {"model": TINY, "tokenizer": {"vocab_size": 256}, "batch_size": 8, "seq_len": 64, "micro_batches": 2,
            "mesh": {"fsdp": -1}}
    return from_dict(SFTConfig, {**base, **kw})


def tiny_rl(init_from: str, **kw) -> RLConfig:
    base = {"init_from": init_from, "prompts_per_step": 4, "group_size": 2, "micro_batches": 2,
            "engine": {"batch_slots": 4, "max_len": 64, "max_new_tokens": 32, "chunk_steps": 1},
            "mesh": {"fsdp": 2, "tensor": 2}}
    return from_dict(RLConfig, {**base, **kw})


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("policy")
    write_policy_meta(run, ModelConfig(**TINY), OptimizerConfig(), "chatml", run / "tokenizer")
    return run


def test_topology_names_follow_the_core_vs_chip_convention():
    cases = {"v5p-64": ("v5p:2x4x4", 32), "v5p-256": ("v5p:4x4x8", 128), "v5e-32": ("v5e:4x8", 32),
             "v4-8": ("v4:2x2x1", 4), "v6e-8": ("v6e:2x4", 8), "v5e:2x2": ("v5e:2x2", 4),
             "V5P:4x4x8": ("v5p:4x4x8", 128)}
    for name, (grid, chips) in cases.items():
        t = parse_topology(name)
        assert (t.topology_name, t.num_chips) == (grid, chips), name
    assert parse_topology("v5p-64").chip.hbm_bytes == 95 * GiB
    for bad in ("v7x-8", "v5p-63", "v5e-3", "v5e:2x2x2", "tpu"):
        with pytest.raises(ConfigError, match="--topology"):
            parse_topology(bad)


def test_presets_are_the_released_architectures():
    # published parameter counts: Qwen2.5-7B 7.62B, Qwen2.5-32B 32.76B, Llama-3.1-8B 8.03B
    assert round(PRESETS["qwen2.5-7b"].num_params / 1e9, 2) == 7.62
    assert round(PRESETS["qwen2.5-32b"].num_params / 1e9, 2) == 32.76
    assert round(PRESETS["llama3.1-8b"].num_params / 1e9, 2) == 8.03
    for name in ("qwen2.5-7b", "qwen2.5-32b", "llama3.1-8b"):
        p = PRESETS[name]
        back = from_hf_config(to_hf_config(p), param_dtype=p.param_dtype, dtype=p.dtype, remat=p.remat)
        assert back == p, name


def test_model_resolution_order(policy_dir, tmp_path):
    model, src = resolve_model(tiny_rl(str(policy_dir)), preset="4m")
    assert model == ModelConfig(**TINY) and src.endswith("policy.json")  # init_from wins over --model
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text(json.dumps(to_hf_config(PRESETS["qwen2.5-7b"])))
    model, _ = resolve_model(tiny_rl(str(hf_dir)), preset=None)
    assert model.d_model == 3584 and model.qkv_bias and model.family == "qwen2"
    model, src = resolve_model(tiny_rl(str(tmp_path / "absent")), preset="4m", model_overrides=["remat=dots"])
    assert model == dataclasses.replace(PRESETS["4m"], remat="dots")
    assert "model.remat=dots" in src
    with pytest.raises(ConfigError, match="'init_from'"):
        resolve_model(tiny_rl(str(tmp_path / "absent")), preset=None)
    sft = load_config(SFTConfig, None, [f"init_from={hf_dir}", "model.remat=full"])  # HF dir + run settings
    model, src = resolve_model(sft, preset=None)
    assert model == dataclasses.replace(PRESETS["qwen2.5-7b"], remat="full", dtype="float32") and src.endswith("json")
    with pytest.raises(ConfigError, match="'init_from'"):  # not the tiny default model of an SFT recipe
        resolve_model(load_config(SFTConfig, None, [f"init_from={tmp_path / 'absent'}"]), preset=None)
    with pytest.raises(ConfigError, match="--model"):
        resolve_model(tiny_rl(str(tmp_path / "absent")), preset="gpt-9")


def test_bad_input_stops_before_any_compile(monkeypatch, policy_dir):
    def no_devices(topo):
        raise AssertionError("a bad config reached the compile stage")

    monkeypatch.setattr(aot_compile, "topology_devices", no_devices)
    with pytest.raises(ConfigError, match="'mesh'"):
        compile_config(tiny_sft(mesh={"fsdp": 3, "tensor": 1}), "v5e:2x2")
    with pytest.raises(ConfigError, match="'batch_size'"):  # 6 / 2 micro-batches = 3 rows over 4 fsdp
        compile_config(tiny_sft(batch_size=6, micro_batches=2), "v5e:2x2")
    with pytest.raises(ConfigError, match="'prompts_per_step'"):  # 8 rows / 4 micro-batches = 2 over 2 x 2
        compile_config(tiny_rl(str(policy_dir), micro_batches=4, mesh={"data": 2, "fsdp": 2, "tensor": 1}),
                       "v5e:2x2")
    with pytest.raises(ConfigError, match="'engine.batch_slots'"):
        compile_config(tiny_rl(str(policy_dir), engine={"batch_slots": 3, "max_len": 64, "max_new_tokens": 32}),
                       "v5e:2x2")
    with pytest.raises(ConfigError, match="'seq_len'"):
        compile_config(tiny_sft(), "v5e:2x2", model_overrides=["max_seq_len=32"])
    with pytest.raises(ConfigError, match="--topology"):
        compile_config(tiny_sft(), "v5e-3")


def test_replicated_weights_stop_compile_naming_them(monkeypatch):
    def no_compile(*args, **kwargs):
        raise AssertionError("a replicated layout reached the compile stage")

    monkeypatch.setattr(aot_compile, "_compile", no_compile)
    with pytest.raises(ConfigError, match=r"axis 'tensor'.*\['embed'\] \[255, 64\]"):  # 255 rows do not split in 2
        compile_config(tiny_sft(mesh={"fsdp": 2, "tensor": 2}), "v5e:2x2", model_overrides=["vocab_size=255"])


def test_cli_bad_input_exits_2(tmp_path, capsys):
    cfg = tmp_path / "sft.yaml"
    cfg.write_text("batch_size: 6\nmicro_batches: 2\n")
    assert main(["compile", str(cfg), "--topology", "v5e:2x2"]) == 2
    assert "'batch_size'" in capsys.readouterr().err
    assert main(["compile", str(cfg), "--topology", "v9-1"]) == 2
    assert "--topology" in capsys.readouterr().err


def test_sft_compiles_for_v5e_and_reports_memory_and_cost():
    cfg = tiny_sft()
    report = compile_config(cfg, "v5e:2x2", config_name="tiny-sft")
    (p,) = report.programs
    assert p.name == "sft_step" and report.mesh == {"data": 1, "fsdp": 4, "tensor": 1}
    state = abstract_train_state(report.model, cfg.optimizer, build_mesh(cfg.mesh, topology_devices(report.topology)))
    # the arguments hold this chip's shard of the train state plus its rows of the batch (4 x [8, 64] / 4)
    assert p.argument_bytes >= per_device_bytes(state) + 4 * 2 * 64 * 4
    assert p.alias_bytes > 0  # the state is donated
    assert p.code_bytes > 0 and p.xla_flops > 0 and p.xla_bytes > 0
    assert p.model_flops == train_model_flops(report.model, 8, 64)
    assert report.estimated_time(p) > 0 and "mfu_estimate" not in report.to_dict()["programs"][0]
    check_fits(report)
    d = report.to_dict()
    assert d["fits"] and d["chips"] == 4 and d["programs"][0]["peak_bytes"] == p.peak_bytes
    assert "sft_step" in format_table(report) and "| sft_step |" in format_markdown(json.loads(json.dumps(d)))


def test_rl_compiles_update_and_decode_for_v5e(policy_dir):
    cfg = tiny_rl(str(policy_dir))
    report = compile_config(cfg, "v5e:2x2", config_name="tiny-rl")
    names = [p.name for p in report.programs]
    assert names == ["rl_step", "decode_chunk x1 kv 64", "prefill 4 x 64"]  # the engine's largest buckets
    step, decode, prefill = report.programs
    assert prefill.alias_bytes > 0 and decode.alias_bytes > 0  # the engine's programs donate the slot state
    assert prefill.resident_bytes == decode.resident_bytes > 0
    assert step.resident_bytes == 0 and step.alias_bytes > 0
    # while decoding, the AdamW moments stay in HBM: resident is this chip's shard of them
    assert decode.resident_bytes > 0 and decode.peak_bytes > decode.argument_bytes
    assert decode.model_flops == decode_model_flops(report.model, 4, 64, 1)
    assert all(p.xla_flops > 0 for p in report.programs)
    check_fits(report)


def test_too_large_a_model_exits_nonzero(tmp_path, capsys):
    # ~8.6B parameters with fp32 AdamW = 103 GB over 4 v5e chips of 16 GiB each
    cfg = tmp_path / "huge.yaml"
    cfg.write_text("model: {vocab_size: 256, d_model: 16384, n_layers: 2, n_heads: 128, n_kv_heads: 8, "
                   "head_dim: 128, d_ff: 65536, max_seq_len: 128}\ntokenizer: {vocab_size: 256}\nbatch_size: 4\nseq_len: 64\n")
    assert main(["compile", str(cfg), "--topology", "v5e:2x2"]) == 1
    err = capsys.readouterr().err
    assert "does not fit" in err and "16 GiB" in err


def test_recipes_load_and_pass_the_shape_checks():
    for path, topo, preset in RECIPES:
        kind = "sft" if "_sft_" in path else "rl"
        assert config_kind(ROOT / path) == kind
        cls = SFTConfig if kind == "sft" else RLConfig
        cfg = load_config(cls, ROOT / path)
        model, _ = resolve_model(cfg, preset)
        aot_compile.check_shapes(cfg, model, cfg.mesh.shape(parse_topology(topo).num_chips))


@pytest.mark.slow
@pytest.mark.parametrize("path,topology,preset", RECIPES)
def test_pod_recipe_compiles_and_fits(path, topology, preset):
    report = compile_file(ROOT / path, topology, preset=preset)
    print(format_table(report))
    check_fits(report)
    assert all(p.peak_bytes <= report.topology.chip.hbm_bytes for p in report.programs)
