"""A Hugging Face model directory as a policy: config.json, safetensors, tokenizer and chat template.

`init_from` of `vagent sft` / `vagent rl` and `--checkpoint` of eval/distill accept such a directory
(train/policy_dir.py dispatches here). Everything is checked before any array is built, in this order:
config.json (architecture, required keys), the run's `model:` section against it, the tokenizer
(tokenizer.json or tokenizer.model) against the embedding rows, the chat template (tokenizer_config.json's
when it is ChatML or Llama 3, else the configured one), then every tensor's name, shape and dtype; only
then are the weights read, straight into the run's shardings (each device reads its own slice).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from jax.sharding import Mesh

from vagent_jax.chat_template import TEMPLATES, detect_template, stop_token_ids
from vagent_jax.config import ConfigError
from vagent_jax.models.config import ModelConfig
from vagent_jax.models.hf_io import load_hf_checkpoint, read_model_config
from vagent_jax.models.transformer import Params
from vagent_jax.tokenizer import Tokenizer, check_vocab_fits, load_tokenizer

HF_CONFIG = "config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
# How the run computes, not what the model is: a `model:` section sets these freely.
RUN_FIELDS = ("param_dtype", "dtype", "remat", "init_std")
# Our field -> the config.json key it comes from (named in contradiction errors).
HF_KEYS = {"family": "architectures", "vocab_size": "vocab_size", "d_model": "hidden_size",
           "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
           "n_kv_heads": "num_key_value_heads", "head_dim": "head_dim", "d_ff": "intermediate_size",
           "rms_eps": "rms_norm_eps", "rope_theta": "rope_theta", "rope_scaling": "rope_scaling",
           "qkv_bias": "attention_bias", "qk_norm": "architectures", "tie_embeddings": "tie_word_embeddings",
           "max_seq_len": "max_position_embeddings"}


def _contradictions(found: Any, configured: Any, default: Any, key: str) -> list[tuple[str, Any, Any]]:
    """(dotted key, configured, found) for each field set away from its default that disagrees."""
    if dataclasses.is_dataclass(found):
        out = []
        for f in dataclasses.fields(found):
            sub_default = getattr(default, f.name) if default is not None else None
            out += _contradictions(getattr(found, f.name), getattr(configured, f.name), sub_default,
                                   f"{key}.{f.name}")
        return out
    if configured == found or (default is not None and configured == default):
        return []
    return [(key, configured, found)]


def merge_model_config(found: ModelConfig, configured: ModelConfig | None, default: ModelConfig | None,
                       source: str) -> ModelConfig:
    """The checkpoint's architecture with the run settings (RUN_FIELDS) of the configured `model:` section.

    A configured architecture key that differs from `found` stops with a ConfigError naming the dotted key
    and `source`. With `default` given, keys left at their default count as unset: a recipe without a
    model section starts from any checkpoint, and a run setting left at its default keeps the
    checkpoint's (a run trained with remat 'full' keeps it). With default None every architecture key
    must agree and every run setting is the configured one."""
    if configured is None:
        return found
    for f in dataclasses.fields(ModelConfig):
        if f.name in RUN_FIELDS:
            continue
        sub_default = getattr(default, f.name) if default is not None else None
        bad = _contradictions(getattr(found, f.name), getattr(configured, f.name), sub_default, f"model.{f.name}")
        if bad:
            key, got, want = bad[0]
            theirs = HF_KEYS[f.name] if source.endswith(HF_CONFIG) else key
            raise ConfigError(f"{source}: config key '{key}' = {got!r} contradicts the checkpoint ({theirs} = "
                              f"{want!r}); drop the key (the architecture comes from the checkpoint) or make it agree")
    run = {k: getattr(configured, k) for k in RUN_FIELDS
           if default is None or getattr(configured, k) != getattr(default, k)}
    return dataclasses.replace(found, **run)


def resolve_template(found: str | None, configured: str | None, source: str,
                     key: str = "tokenizer.template") -> str:
    """The chat template: the checkpoint's known one (`found`), else the configured one; errors name `key`."""
    if configured is not None and configured not in TEMPLATES:
        raise ConfigError(f"config key '{key}': {configured!r} is not one of {TEMPLATES}")
    if found is None:
        if configured is None:
            raise ConfigError(f"config key '{key}': {source} has no chat template this trainer knows "
                              f"(ChatML or Llama 3); set {key} to one of {', '.join(TEMPLATES)} "
                              "(RL, eval and distill: start from a vagent sft run that sets it)")
        return configured
    if configured is not None and configured != found:
        raise ConfigError(f"config key '{key}': {configured!r} contradicts the {found} chat template of {source}")
    return found


def hf_chat_template(hf_dir: Path) -> str | None:
    """Which known template tokenizer_config.json's `chat_template` writes (None: absent or unknown)."""
    path = hf_dir / TOKENIZER_CONFIG
    if not path.is_file():
        return None
    try:
        jinja = json.loads(path.read_text()).get("chat_template")
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{path}: not a JSON object ({e})") from None
    if isinstance(jinja, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in jinja if isinstance(t, dict)}
        jinja = named.get("default") or next(iter(named.values()), None)
    return detect_template(jinja) if isinstance(jinja, str) else None


def load_hf_dir(hf_dir: str | Path, mesh: Mesh | None, model: ModelConfig | None = None,
                model_default: ModelConfig | None = None,
                template: str | None = None) -> tuple[ModelConfig, Tokenizer, str, Params]:
    """(model config, tokenizer, template, params on the mesh) of an HF directory, checked in full first."""
    hf_dir = Path(hf_dir)
    source = hf_dir / HF_CONFIG
    cfg = merge_model_config(read_model_config(hf_dir), model, model_default, str(source))
    tokenizer = load_tokenizer(hf_dir)
    check_vocab_fits(tokenizer, cfg.vocab_size, f"{source} vocab_size")
    chosen = resolve_template(hf_chat_template(hf_dir), template, str(hf_dir / TOKENIZER_CONFIG))
    stop_token_ids(chosen, tokenizer)  # the template's end token must be one id of this vocabulary
    _, params = load_hf_checkpoint(hf_dir, mesh, cfg=cfg)
    return cfg, tokenizer, chosen, params
