"""A run directory as a policy: `policy.json` (model and optimizer config, chat template, tokenizer path)
beside `tokenizer/` and `checkpoints/`, so a later stage (RL after SFT, eval, distill) can load it.

The optimizer config is recorded because a checkpoint holds the whole train state; restoring it needs the
same abstract state (params plus that optimizer's moments). Only the params are handed on.
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
from vagent_jax.tokenizer import Tokenizer, check_vocab_fits, load_tokenizer
from vagent_jax.train.checkpoint import Checkpointer, CheckpointOptions, abstract_of
from vagent_jax.train.optimizer import OptimizerConfig
from vagent_jax.train.train_state import create_train_state, state_shardings

POLICY_FILE = "policy.json"
CHECKPOINT_DIR = "checkpoints"


@dataclasses.dataclass
class Policy:
    """A loaded policy: its model config, tokenizer, chat template and params (on the mesh), and its step."""

    model: ModelConfig
    tokenizer: Tokenizer
    template: str
    params: Any
    step: int
    run_dir: Path


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
        raise FileNotFoundError(f"{path}: not a vagent run directory (no {POLICY_FILE}); "
                                "point init_from/--checkpoint at the out_dir of `vagent sft` or `vagent rl`")
    try:
        meta = json.loads(path.read_text())
        model = from_dict(ModelConfig, meta["model"], prefix="model.")
        opt = from_dict(OptimizerConfig, meta["optimizer"], prefix="optimizer.")
        template, tok = str(meta["template"]), Path(meta["tokenizer"])
    except (KeyError, json.JSONDecodeError, ConfigError) as e:
        raise ValueError(f"{path}: malformed policy metadata ({e})") from None
    return model, opt, template, tok if tok.is_absolute() else Path(run_dir) / tok


def load_policy(run_dir: str | Path, mesh: Mesh, step: int | None = None,
                expect_model: ModelConfig | None = None) -> Policy:
    """Load params of `step` (default: the newest complete checkpoint) from a run directory.

    expect_model: when given, a run whose model config differs stops with an error naming the field.
    """
    run_dir = Path(run_dir)
    model, opt, template, tok_path = read_policy_meta(run_dir)
    if expect_model is not None and expect_model != model:
        diff = [f.name for f in dataclasses.fields(model) if getattr(model, f.name) != getattr(expect_model, f.name)]
        raise ValueError(f"{run_dir / POLICY_FILE}: checkpoint model config differs from the configured one in {diff}")
    tokenizer = load_tokenizer(tok_path)
    check_vocab_fits(tokenizer, model.vocab_size, f"{run_dir / POLICY_FILE} model.vocab_size")
    ckpt = Checkpointer(run_dir / CHECKPOINT_DIR, CheckpointOptions(async_save=False))
    try:
        chosen = ckpt.latest_step() if step is None else step
        if chosen is None:
            raise FileNotFoundError(f"{run_dir / CHECKPOINT_DIR}: no complete checkpoint to load")
        abstract = jax.eval_shape(lambda: create_train_state(model, opt, mesh, jax.random.key(0)))
        shardings = state_shardings(model, mesh, opt)
        target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
        restored = ckpt.restore(chosen, abstract_of(target))
    finally:
        ckpt.close()
    return Policy(model, tokenizer, template, restored.state.params, int(chosen), run_dir)
