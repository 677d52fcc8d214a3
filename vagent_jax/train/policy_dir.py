"""Where a policy comes from: a vagent run directory or a Hugging Face model directory.

A run directory holds `policy.json` (model and optimizer config, chat template, tokenizer path) beside
`tokenizer/` and `checkpoints/`, so a later stage (RL after SFT, eval, distill, export) can load it; only
the params subtree of its checkpoint is read (orbax partial restore), never the optimizer moments. A
directory with config.json and no policy.json is a Hugging Face checkpoint (models/hf_dir.py).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
from jax.sharding import Mesh

from vagent_jax.config import ConfigError, from_dict, to_dict
from vagent_jax.models.config import ModelConfig
from vagent_jax.models.hf_dir import HF_CONFIG, load_hf_dir, merge_model_config, resolve_template
from vagent_jax.models.transformer import init_params
from vagent_jax.tokenizer import Tokenizer, check_vocab_fits, load_tokenizer
from vagent_jax.train.checkpoint import Checkpointer, CheckpointOptions
from vagent_jax.train.optimizer import OptimizerConfig
from vagent_jax.train.train_state import param_shardings

POLICY_FILE = "policy.json"
CHECKPOINT_DIR = "checkpoints"


@dataclasses.dataclass
class Policy:
    """A loaded policy: its model config, tokenizer, chat template and params (on the mesh), and its step."""

    model: ModelConfig
    tokenizer: Tokenizer
    template: str
    params: Any
    step: int  # 0 for a Hugging Face directory
    run_dir: Path  # the directory it was loaded from (a run or a Hugging Face directory)
    tokenizer_path: Path  # what a later run's policy.json records as the tokenizer


def write_policy_meta(run_dir: str | Path, model: ModelConfig, optimizer: OptimizerConfig, template: str,
                      tokenizer_path: str | Path) -> None:
    """Record what a later stage needs to load this run's checkpoints (tokenizer path relative if inside)."""
    run_dir = Path(run_dir)
    tok = Path(tokenizer_path).absolute()
    try:
        tok_entry = str(tok.relative_to(run_dir.absolute()))
    except ValueError:
        tok_entry = str(tok)
    meta = {"model": to_dict(model), "optimizer": to_dict(optimizer), "template": template, "tokenizer": tok_entry}
    (run_dir / POLICY_FILE).write_text(json.dumps(meta, indent=2))


def read_policy_meta(run_dir: str | Path) -> tuple[ModelConfig, OptimizerConfig, str, Path]:
    """(model config, optimizer config, template, tokenizer path) of a run; errors name the file."""
    path = Path(run_dir) / POLICY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a vagent run directory (no {POLICY_FILE}) nor a Hugging Face "
                                f"model directory (no {HF_CONFIG}); point init_from/--checkpoint at the out_dir "
                                "of `vagent sft` / `vagent rl` or at an HF checkpoint directory")
    try:
        meta = json.loads(path.read_text())
        model = from_dict(ModelConfig, meta["model"], prefix="model.")
        opt = from_dict(OptimizerConfig, meta["optimizer"], prefix="optimizer.")
        template, tok = str(meta["template"]), Path(meta["tokenizer"])
    except (KeyError, json.JSONDecodeError, ConfigError) as e:
        raise ValueError(f"{path}: malformed policy metadata ({e})") from None
    return model, opt, template, tok if tok.is_absolute() else Path(run_dir) / tok


def _check_local(path: str | Path) -> Path:
    """A local (or mounted) directory; object-store URLs stop here with the way to mount them."""
    text = str(path)
    if "://" in text:
        raise ValueError(f"'{text}': URLs are not read directly (checkpoint files are memory-mapped so each "
                         "device reads only its shard); mount the bucket (e.g. gcsfuse, see docs/multihost.md) "
                         "and give the mounted path")
    return Path(path)


def load_policy(path: str | Path, mesh: Mesh, step: int | None = None, expect_model: ModelConfig | None = None,
                model_default: ModelConfig | None = None, template: str | None = None) -> Policy:
    """Load a policy from a vagent run directory (policy.json) or a Hugging Face model directory.

    Run directory: the params of `step` (default: the newest complete checkpoint) and nothing else: the
    optimizer moments stay on disk. HF directory: config.json, tokenizer and weights (models/hf_dir.py).
    expect_model: the configured model; its run settings (dtype, remat) apply, and an architecture key that
    contradicts the checkpoint stops with an error naming it (keys equal to `model_default` count as unset).
    template: the configured chat template; one contradicting the checkpoint's stops likewise.
    """
    path = _check_local(path)
    if not (path / POLICY_FILE).is_file() and (path / HF_CONFIG).is_file():
        if step is not None:
            raise ValueError(f"{path}: a Hugging Face directory has no steps; step={step} applies to run directories")
        model, tokenizer, chosen, params = load_hf_dir(path, mesh, expect_model, model_default, template)
        return Policy(model, tokenizer, chosen, params, 0, path, path)
    found, _, found_template, tok_path = read_policy_meta(path)
    model = merge_model_config(found, expect_model, model_default, str(path / POLICY_FILE))
    chosen = resolve_template(found_template, template, str(path / POLICY_FILE))
    tokenizer = load_tokenizer(tok_path)
    check_vocab_fits(tokenizer, model.vocab_size, f"{path / POLICY_FILE} model.vocab_size")
    ckpt = Checkpointer(path / CHECKPOINT_DIR, CheckpointOptions(async_save=False))
    try:
        chosen_step = ckpt.latest_step() if step is None else step
        if chosen_step is None:
            raise FileNotFoundError(f"{path / CHECKPOINT_DIR}: no complete checkpoint to load")
        shardings = param_shardings(model, mesh)
        abstract = jax.eval_shape(lambda: init_params(model, jax.random.key(0)))
        target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
        params = ckpt.restore_params(chosen_step, target)
    finally:
        ckpt.close()
    return Policy(model, tokenizer, chosen, params, int(chosen_step), path, tok_path)
