"""`vagent export`: a tiny random HF checkpoint (made with transformers) goes through SFT (5 steps) and RL
(2 steps) and is exported; transformers loads the result, its fp32 logits equal ours (<= 1e-4 of the logit
scale), and the exported tokenizer (AutoTokenizer, chat template included) gives our token ids."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hf_fixtures import make_hf_model_dir
from vagent_jax.chat_template import render_chat
from vagent_jax.cli import main
from vagent_jax.config import load_config
from vagent_jax.jobs.export import parse_size
from vagent_jax.jobs.rl import RLConfig, run_rl
from vagent_jax.jobs.sft import SFTConfig, run_sft
from vagent_jax.models.hf_io import load_hf_checkpoint
from vagent_jax.models.transformer import forward
from vagent_jax.sharding import MeshConfig, make_mesh
from vagent_jax.train.policy_dir import load_policy

TESTS = Path(__file__).resolve().parent
TASKS = ["tasks.env=coin_test", "tasks.env_modules=[vagent_jax.testing]", "tasks.num_tasks=32", "num_devices=1"]
SFT = ["steps=5", "batch_size=4", "seq_len=96", "log_every=1", "save_every=100", "optimizer.lr=0.003",
       "optimizer.total_steps=5", "optimizer.warmup_steps=0"]
RL = ["steps=2", "prompts_per_step=2", "group_size=2", "engine.batch_slots=4", "engine.max_len=96",
      "engine.max_new_tokens=8", "engine.chunk_steps=8", "env_workers=1", "save_every=100", "optimizer.lr=0.003",
      "max_rounds=1", "dynamic_sampling=false"]
CHAT = [{"role": "system", "content": "Answer with <answer>LETTER</answer>."},
        {"role": "user", "content": "Letter: a"}, {"role": "assistant", "content": "<answer>a</answer>"}]
TEXTS = ["Letter: ?", "hello world 123 <|im_end|>", "<tool_call>x</tool_call> <answer>b</answer>", "émoji ✓ 日本"]


def _sft_rl_export(family: str, tmp: Path) -> tuple[Path, Path]:
    """HF dir -> SFT (5 steps) -> RL (2 steps) -> `vagent export`; returns (RL run dir, export dir)."""
    sys.path.insert(0, str(TESTS))
    hf, sft, rl, out = tmp / "hf", tmp / "sft", tmp / "rl", tmp / "export"
    make_hf_model_dir(family, hf)
    data = f"tasks.data_dir={tmp / 'data'}"
    run_sft(load_config(SFTConfig, None, TASKS + SFT + [data, f"init_from={hf}", f"out_dir={sft}"]))
    run_rl(load_config(RLConfig, None, TASKS + RL + [data, f"init_from={sft}", f"out_dir={rl}"]))
    assert main(["export", str(rl), str(out), "--max-shard-size", "60KB"]) == 0
    return rl, out


@pytest.mark.parametrize("family", ["qwen3", pytest.param("llama", marks=pytest.mark.slow),
                                    pytest.param("qwen2", marks=pytest.mark.slow)])
def test_hf_to_sft_to_rl_to_export_matches_transformers(family: str, tmp_path: Path) -> None:
    import torch
    import transformers

    rl, out = _sft_rl_export(family, tmp_path)
    mesh = make_mesh(MeshConfig(), devices=jax.devices()[:1])
    policy = load_policy(rl, mesh)
    assert (out / "model.safetensors.index.json").is_file()  # 60KB shards: several files
    cfg, exported = load_hf_checkpoint(out)
    assert cfg == policy.model
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(policy.params), jax.tree.leaves(exported)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))
    hf0 = load_hf_checkpoint(tmp_path / "hf")[1]
    assert not np.array_equal(np.asarray(hf0["final_norm"]), np.asarray(policy.params["final_norm"]))  # trained

    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(model).__name__ == json.loads((out / "config.json").read_text())["architectures"][0]
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 40))
    with torch.no_grad():
        ref = model(torch.tensor(tokens)).logits.numpy()
    positions = jnp.broadcast_to(jnp.arange(40, dtype=jnp.int32), (2, 40))
    ours, _ = jax.jit(forward, static_argnames="cfg")(policy.params, jnp.asarray(tokens, jnp.int32), positions,
                                                      cfg=policy.model)
    scale = np.abs(ref).max()
    assert scale > 1.0
    assert np.abs(np.asarray(ours) - ref).max() <= 1e-4 * scale

    tok = transformers.AutoTokenizer.from_pretrained(out)
    for text in TEXTS:
        assert tok(text, add_special_tokens=False)["input_ids"] == policy.tokenizer.encode(text), text
    ids, _ = render_chat(CHAT, policy.tokenizer, policy.template, add_generation_prompt=False)
    assert list(tok.apply_chat_template(CHAT, tokenize=True, return_dict=False)) == ids
    assert tok.eos_token_id == policy.tokenizer.eos_id


def test_export_refuses_a_non_empty_out_dir_and_bad_sizes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("keep me")
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "out")]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "new")]) == 2
    assert "not a vagent run directory" in capsys.readouterr().err
    assert parse_size("5GB") == 5 * 10**9 and parse_size("40KiB") == 40 * 1024 and parse_size("123") == 123
    with pytest.raises(ValueError, match="max-shard-size"):
        parse_size("lots")


@pytest.fixture(scope="module")
def sp_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    """The project's own SentencePiece tokenizer (as `vagent demo` trains one), trained once."""
    from vagent_jax.tokenizer_train import train_sentencepiece

    path = tmp_path_factory.mktemp("sp_tok")
    return path, train_sentencepiece(TEXTS * 20 + [m["content"] for m in CHAT] * 20, path, vocab_size=330)


def _make_run(run: Path, model, sp_tokenizer, seed: int = 3):
    """A run directory as `vagent demo` writes it: a SentencePiece tokenizer, `model` with random weights,
    one checkpoint. Returns (run dir, tokenizer, model, params)."""
    from vagent_jax.train.checkpoint import Checkpointer
    from vagent_jax.train.optimizer import OptimizerConfig
    from vagent_jax.train.policy_dir import write_policy_meta
    from vagent_jax.train.train_state import create_train_state

    tok_dir, tok = sp_tokenizer
    run.mkdir(parents=True, exist_ok=True)
    mesh = make_mesh(MeshConfig(), devices=jax.devices()[:1])
    state = create_train_state(model, OptimizerConfig(), mesh, jax.random.key(seed))
    write_policy_meta(run, model, OptimizerConfig(), "chatml", tok_dir)
    with Checkpointer(run / "checkpoints") as ckpt:
        ckpt.save(1, state, force=True)
    return run, tok, model, state.params


SMALL = dict(vocab_size=352, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64, max_seq_len=64)


@pytest.fixture(scope="module")
def sp_run(tmp_path_factory: pytest.TempPathFactory, sp_tokenizer):
    """A qwen3 run (q/k norm, tied embeddings) with a SentencePiece tokenizer."""
    from vagent_jax.models.config import ModelConfig

    return _make_run(tmp_path_factory.mktemp("sp_run"), ModelConfig(**SMALL, qk_norm=True), sp_tokenizer)


def _logits_match(out: Path, params, model, ids: list[int]) -> None:
    """transformers' fp32 logits of the export equal ours within 1e-4 of the logit scale."""
    import torch
    import transformers

    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf_model(torch.tensor([ids])).logits.numpy()
    positions = jnp.arange(len(ids), dtype=jnp.int32)[None]
    ours, _ = forward(params, jnp.asarray([ids], jnp.int32), positions, cfg=model)
    assert np.abs(np.asarray(ours) - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("family,flags,arch", [
    ("qwen3", dict(qk_norm=False), "LlamaForCausalLM"),  # SFTConfig's default model: no q/k norm
    ("qwen2", dict(qkv_bias=False, tie_embeddings=False), "LlamaForCausalLM"),
    ("llama", dict(qk_norm=True, qkv_bias=True), "Qwen3ForCausalLM")])
def test_export_picks_the_transformers_class_with_the_same_layers(family, flags, arch, sp_tokenizer,
                                                                   tmp_path: Path) -> None:
    from vagent_jax.models.config import ModelConfig

    run, _, model, params = _make_run(tmp_path / "run", ModelConfig(**SMALL, family=family, **flags), sp_tokenizer)
    assert main(["export", str(run), str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == [arch]
    _logits_match(tmp_path / "out", params, model, list(range(3, 40)))


def test_sentencepiece_run_exports_a_tokenizer_transformers_reads_alike(sp_run, tmp_path: Path) -> None:
    """tokenizer.model with a LlamaTokenizer config: AutoTokenizer gives our ids (chat template included),
    and AutoModel our logits."""
    import transformers

    run, tok, model, params = sp_run
    assert main(["export", str(run), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "tokenizer.model").is_file()
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    for text in TEXTS + ["<|im_start|>assistant\n<answer>a</answer><|im_end|>\n"]:
        assert hf_tok(text, add_special_tokens=False)["input_ids"] == tok.encode(text), text
    ids, _ = render_chat(CHAT, tok, "chatml", add_generation_prompt=True)
    assert list(hf_tok.apply_chat_template(CHAT, tokenize=True, add_generation_prompt=True, return_dict=False)) == ids
    _logits_match(tmp_path / "out", params, model, ids)
    again = load_policy(tmp_path / "out", make_mesh(MeshConfig(), devices=jax.devices()[:1]))  # an HF dir with
    assert again.tokenizer.source.endswith("tokenizer.model") and again.template == "chatml"  # tokenizer.model
    assert again.model == model and again.tokenizer.encode(TEXTS[1]) == tok.encode(TEXTS[1])


def test_bfloat16_export_holds_the_rounded_params(sp_run, tmp_path: Path) -> None:
    from vagent_jax.models.safetensors_file import SafetensorsFile

    run, _, model, params = sp_run
    assert main(["export", str(run), str(tmp_path / "out"), "--dtype", "bfloat16"]) == 0
    f = SafetensorsFile(tmp_path / "out" / "model.safetensors")
    assert {dtype.name for dtype, _, _ in f.entries.values()} == {"bfloat16"}
    assert json.loads((tmp_path / "out" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    cfg, loaded = load_hf_checkpoint(tmp_path / "out")  # back to fp32 master weights
    assert cfg == model
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(np.asarray(a.astype(jnp.bfloat16).astype(jnp.float32)), np.asarray(b))


@pytest.mark.parametrize("source", ["run", "hf"])
def test_two_process_export_writes_the_same_files(source: str, sp_run, tmp_path: Path) -> None:
    """2 processes x 2 CPU devices give byte-identical files to a one-process export: a run's params restored
    sharded over both hosts, or an HF directory each host reads its own shards of, gathered leaf by leaf
    and written by process 0."""
    import os
    import socket
    import subprocess

    run = sp_run[0]
    if source == "hf":
        run = tmp_path / "hf"
        make_hf_model_dir("qwen2", run)
    assert main(["export", str(run), str(tmp_path / "one"), "--max-shard-size", "20KB"]) == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAGENT_")}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs = [subprocess.Popen([sys.executable, "-m", "vagent_jax.cli", "export", str(run), str(tmp_path / "two"),
                               "--max-shard-size", "20KB", f"--coordinator=127.0.0.1:{port}", "--num-processes=2",
                               f"--process-id={i}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert len([n for n in names if n.endswith(".safetensors")]) > 1
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir())
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
