"""`vagent export RUN_DIR OUT_DIR`: a policy as a Hugging Face checkpoint that transformers loads.

OUT_DIR gets config.json (architecture, model_type, torch_dtype, rope settings with llama3 scaling, tied
embeddings, qkv bias / q-k norm by family, token ids), model.safetensors (or shards of at most
`max_shard_size` with model.safetensors.index.json), generation_config.json (the chat template's stop
ids), and the tokenizer: the run's tokenizer.json or tokenizer.model with a tokenizer_config.json whose
`chat_template` is the Jinja form of the template the policy was trained with. Only the params are read
from the run's checkpoint; every process takes part in gathering them (sharded on the mesh), one leaf at
a time, and process 0 alone writes.

transformers 5 loads a `qwen2` checkpoint's tokenizer as its Qwen2Tokenizer whatever tokenizer_class
says, so a qwen2-family run should keep Qwen's tokenizer (as one started from a Qwen2.5 checkpoint does).
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import jax

from vagent_jax.chat_template import HF_CHAT_TEMPLATES, stop_token_ids
from vagent_jax.models.hf_io import save_hf_checkpoint
from vagent_jax.sharding import MeshConfig
from vagent_jax.tokenizer import HFTokenizer, SentencePieceTokenizer, Tokenizer
from vagent_jax.train.policy_dir import Policy, load_policy
from vagent_jax.train.run_common import run_mesh

DEFAULT_MAX_SHARD = "5GB"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KIB|MIB|GIB)?\s*$", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str | int) -> int:
    """Bytes of a size such as 5GB, 500MB or 40000 (decimal units, KiB/MiB/GiB binary)."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(text)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"--max-shard-size: {text!r} is not a positive size like 5GB, 500MB or 40000")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "B").upper()])


def _check_out_dir(out: Path, run_dir: Path) -> None:
    """OUT_DIR must be new or empty and not the run directory itself (nothing is overwritten)."""
    if out.resolve() == run_dir.resolve():
        raise ValueError(f"{out}: OUT_DIR is the run directory itself; export into a new directory")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: OUT_DIR exists and is not an empty directory; export into a new one")


def _token(tok: Tokenizer, token_id: int | None) -> str | None:
    return None if token_id is None else tok.id_to_token(token_id)


def tokenizer_config(policy: Policy) -> dict[str, Any]:
    """tokenizer_config.json: the source's own (when it has one) with the run's chat template and tokens."""
    tok = policy.tokenizer
    src = Path(tok.source).with_name("tokenizer_config.json")
    config: dict[str, Any] = json.loads(src.read_text()) if src.is_file() else {}
    if isinstance(tok, SentencePieceTokenizer):
        config.setdefault("tokenizer_class", "LlamaTokenizer")
        config.update(add_bos_token=False, add_eos_token=False, legacy=False, add_prefix_space=False)
    else:
        config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
    for key, token_id in (("bos_token", tok.bos_id), ("eos_token", tok.eos_id), ("pad_token", tok.pad_id)):
        if token_id is not None:
            config.setdefault(key, _token(tok, token_id))
    config["chat_template"] = HF_CHAT_TEMPLATES[policy.template]
    config["model_max_length"] = policy.model.max_seq_len
    return config


def write_tokenizer(policy: Policy, out: Path) -> list[str]:
    """Copy the tokenizer file and write tokenizer_config.json; returns the file names written."""
    tok = policy.tokenizer
    if not isinstance(tok, (HFTokenizer, SentencePieceTokenizer)):
        raise ValueError(f"tokenizer {tok.source}: cannot export a {type(tok).__name__}")
    name = "tokenizer.json" if isinstance(tok, HFTokenizer) else "tokenizer.model"
    shutil.copyfile(tok.source, out / name)
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(policy), indent=2, ensure_ascii=False))
    return [name, "tokenizer_config.json"]


def token_ids(policy: Policy) -> dict[str, Any]:
    """bos/eos/pad ids for config.json and generation_config.json (eos: every stop id of the template)."""
    tok = policy.tokenizer
    stops = list(stop_token_ids(policy.template, tok))
    ids: dict[str, Any] = {"eos_token_id": stops if len(stops) > 1 else stops[0]}
    if tok.bos_id is not None:
        ids["bos_token_id"] = tok.bos_id
    if tok.pad_id is not None:
        ids["pad_token_id"] = tok.pad_id
    return ids


def export_policy(run_dir: str | Path, out_dir: str | Path, step: int | None = None,
                  max_shard_size: str | int = DEFAULT_MAX_SHARD, dtype: str | None = None,
                  mesh: MeshConfig = MeshConfig(), num_devices: int = 0) -> dict[str, Any]:
    """Write the policy in `run_dir` (a run or HF directory) to `out_dir` as an HF checkpoint, tensors in
    `dtype` (default: the run's param_dtype; bfloat16 halves fp32 master weights); returns a summary."""
    run_dir, out = Path(run_dir), Path(out_dir)
    max_bytes = parse_size(max_shard_size)
    _check_out_dir(out, run_dir)
    if jax.process_count() > 1:  # every host checked OUT_DIR before process 0 starts writing into it
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("vagent-export-out-dir-checked")
    policy = load_policy(run_dir, run_mesh(mesh, num_devices), step)
    ids = token_ids(policy)
    save_hf_checkpoint(out, policy.params, policy.model, max_shard_bytes=max_bytes, extra_config=ids, dtype=dtype)
    files: list[str] = []
    if jax.process_index() == 0:
        (out / "generation_config.json").write_text(json.dumps(ids, indent=2))
        write_tokenizer(policy, out)
        files = sorted(p.name for p in out.iterdir())
    return {"run_dir": str(run_dir), "step": policy.step, "out_dir": str(out), "family": policy.model.family,
            "params": policy.model.num_params, "dtype": dtype or policy.model.param_dtype,
            "template": policy.template, "files": files}
