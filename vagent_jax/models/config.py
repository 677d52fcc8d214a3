"""ModelConfig: one decoder-only transformer family covering Llama 3.x, Qwen2.5 and Qwen3.

The differences between the families are flags (qkv bias, q/k RMSNorm, tied embeddings, rope scaling),
so one forward serves all of them. `from_hf_config` / `to_hf_config` translate config.json.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

from vagent_jax.config import ConfigError, config_scope, require

ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
}


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama-3 style frequency scaling (rope_type 'llama3'); 'none' leaves frequencies as they are."""

    rope_type: Literal["none", "llama3", "linear"] = "none"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of the policy. param_dtype stores weights; dtype is the matmul compute dtype."""

    family: Literal["llama", "qwen2", "qwen3"] = "qwen3"
    vocab_size: int = 512
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 32
    d_ff: int = 384
    rms_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling = RopeScaling()
    qkv_bias: bool = False
    qk_norm: bool = False
    tie_embeddings: bool = True
    max_seq_len: int = 2048
    param_dtype: Literal["float32", "bfloat16"] = "float32"
    dtype: Literal["float32", "bfloat16"] = "float32"
    remat: Literal["none", "full", "dots"] = "none"
    init_std: float = 0.02

    def validate(self) -> None:
        """Reject shapes that cannot form a model, naming the key."""
        for key in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff"):
            require(getattr(self, key) > 0, key, f"must be positive, got {getattr(self, key)}")
        require(self.n_heads % self.n_kv_heads == 0, "n_kv_heads",
                f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")
        require(self.head_dim % 2 == 0, "head_dim", "must be even for rotary embeddings")

    @property
    def num_params(self) -> int:
        """Parameter count (embeddings included once when tied)."""
        d, h = self.d_model, self.head_dim
        attn = d * h * (self.n_heads + 2 * self.n_kv_heads) + self.n_heads * h * d
        if self.qkv_bias:
            attn += h * (self.n_heads + 2 * self.n_kv_heads)
        norms = 2 * d + (2 * h if self.qk_norm else 0)
        layer = attn + 3 * d * self.d_ff + norms
        emb = self.vocab_size * d * (1 if self.tie_embeddings else 2)
        return self.n_layers * layer + emb + d

    @property
    def num_non_embedding_params(self) -> int:
        """Parameters excluding the embedding table (the lm head is counted: it is a matmul per token)."""
        return self.num_params - self.vocab_size * self.d_model * (0 if self.tie_embeddings else 1)


def _rope_from_hf(hf: dict[str, Any]) -> tuple[float, RopeScaling]:
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    src = params if params.get("rope_type", "default") not in ("default", None) else scaling
    kind = src.get("rope_type", src.get("type", "default")) if src else "default"
    if kind in ("default", None):
        return theta, RopeScaling()
    if kind not in ("llama3", "linear"):
        raise ConfigError(f"config.json key 'rope_scaling.rope_type': unsupported rope type '{kind}'")
    return theta, RopeScaling(
        rope_type=kind,
        factor=float(src.get("factor", 1.0)),
        low_freq_factor=float(src.get("low_freq_factor", 1.0)),
        high_freq_factor=float(src.get("high_freq_factor", 4.0)),
        original_max_position_embeddings=int(src.get("original_max_position_embeddings", 8192)),
    )


def from_hf_config(hf: dict[str, Any], source: str = "config.json", **overrides: Any) -> ModelConfig:
    """Translate a Hugging Face config.json mapping; an unknown architecture stops naming the key."""
    archs = hf.get("architectures") or []
    model_type = hf.get("model_type")
    family = None
    for a in archs:
        family = ARCHITECTURES.get(a)
        if family:
            break
    if family is None and not archs and model_type in ARCHITECTURES.values():
        family = model_type
    if family is None:
        raise ConfigError(
            f"{source}: key 'architectures' = {archs or model_type!r} is not supported "
            f"(supported: {', '.join(ARCHITECTURES)})")
    try:
        d, n_heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
        theta, scaling = _rope_from_hf(hf)
        cfg = dict(
            family=family,
            vocab_size=int(hf["vocab_size"]),
            d_model=d,
            n_layers=int(hf["num_hidden_layers"]),
            n_heads=n_heads,
            n_kv_heads=int(hf.get("num_key_value_heads") or n_heads),
            head_dim=int(hf.get("head_dim") or d // n_heads),
            d_ff=int(hf["intermediate_size"]),
            rms_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            rope_scaling=scaling,
            qkv_bias=family == "qwen2" or bool(hf.get("attention_bias", False)),
            qk_norm=family == "qwen3",
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            max_seq_len=int(hf.get("max_position_embeddings", 2048)),
        )
    except KeyError as e:
        raise ConfigError(f"{source}: missing key {e}") from None
    if hf.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"{source}: key 'hidden_act' = {hf['hidden_act']!r} is not supported (silu only)")
    if hf.get("mlp_bias"):
        raise ConfigError(f"{source}: key 'mlp_bias' = true is not supported")
    if hf.get("use_sliding_window"):
        raise ConfigError(f"{source}: key 'use_sliding_window' = true is not supported (full attention only)")
    cfg.update(overrides)
    out = ModelConfig(**cfg)
    with config_scope("model"):
        out.validate()
    return out


def hf_family(cfg: ModelConfig) -> str:
    """The transformers family that computes this model: `family` when its class has the same layers, else
    the one that does (the family is only a label here; transformers' Qwen3 always has q/k norm, Qwen2
    always qkv bias and neither Llama nor Qwen2 has q/k norm)."""
    if cfg.qk_norm:
        return "qwen3"
    if cfg.family == "qwen2" and cfg.qkv_bias:
        return "qwen2"
    return "llama"


def to_hf_config(cfg: ModelConfig) -> dict[str, Any]:
    """The config.json mapping transformers needs to load the same model (architecture by hf_family)."""
    cfg = dataclasses.replace(cfg, family=hf_family(cfg))
    arch = {v: k for k, v in ARCHITECTURES.items()}[cfg.family]
    rope: dict[str, Any] = {"rope_theta": cfg.rope_theta, "rope_type": "default"}
    if cfg.rope_scaling.rope_type != "none":
        rope.update(dataclasses.asdict(cfg.rope_scaling))
        if cfg.rope_scaling.rope_type == "linear":
            for k in ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
                rope.pop(k)
    out: dict[str, Any] = {
        "architectures": [arch],
        "model_type": cfg.family,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "rms_norm_eps": cfg.rms_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": rope,
        "tie_word_embeddings": cfg.tie_embeddings,
        "max_position_embeddings": cfg.max_seq_len,
        "hidden_act": "silu",
        "torch_dtype": cfg.param_dtype,
    }
    if cfg.family in ("llama", "qwen3"):
        out["attention_bias"] = cfg.qkv_bias
    if cfg.family == "llama":
        out["mlp_bias"] = False
    if cfg.rope_scaling.rope_type != "none":
        out["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    return out


PRESETS: dict[str, ModelConfig] = {
    # ~4M parameters: the CPU demo / benchmark policy.
    "4m": ModelConfig(vocab_size=2048, d_model=256, n_layers=4, n_heads=8, n_kv_heads=4, head_dim=32,
                      d_ff=768, qk_norm=True, max_seq_len=1024),
    # ~100M parameters: the larger CPU benchmark config.
    "100m": ModelConfig(vocab_size=32768, d_model=768, n_layers=10, n_heads=12, n_kv_heads=4, head_dim=64,
                        d_ff=2304, qk_norm=True, max_seq_len=2048),
    # The released architectures (HF config.json values), fp32 master weights with bf16 matmuls and
    # full remat as pod defaults; recipes override remat/max_seq_len with model.* keys.
    "qwen2.5-7b": ModelConfig(family="qwen2", vocab_size=152064, d_model=3584, n_layers=28, n_heads=28,
                              n_kv_heads=4, head_dim=128, d_ff=18944, rms_eps=1e-6, rope_theta=1e6,
                              qkv_bias=True, tie_embeddings=False, max_seq_len=32768,
                              param_dtype="float32", dtype="bfloat16", remat="full"),
    "qwen2.5-32b": ModelConfig(family="qwen2", vocab_size=152064, d_model=5120, n_layers=64, n_heads=40,
                               n_kv_heads=8, head_dim=128, d_ff=27648, rms_eps=1e-6, rope_theta=1e6,
                               qkv_bias=True, tie_embeddings=False, max_seq_len=32768,
                               param_dtype="float32", dtype="bfloat16", remat="full"),
    "llama3.1-8b": ModelConfig(family="llama", vocab_size=128256, d_model=4096, n_layers=32, n_heads=32,
                               n_kv_heads=8, head_dim=128, d_ff=14336, rms_eps=1e-5, rope_theta=5e5,
                               rope_scaling=RopeScaling("llama3", factor=8.0, low_freq_factor=1.0,
                                                        high_freq_factor=4.0,
                                                        original_max_position_embeddings=8192),
                               qkv_bias=False, tie_embeddings=False, max_seq_len=131072,
                               param_dtype="float32", dtype="bfloat16", remat="full"),
}
