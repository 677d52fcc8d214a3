"""Tiny random Hugging Face checkpoints of each supported family, built with transformers (PyTorch CPU)."""
from __future__ import annotations

from pathlib import Path

FAMILIES = {
    "llama": dict(cls="LlamaForCausalLM", cfg="LlamaConfig", extra=dict(
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 16}, tie_word_embeddings=False)),
    "qwen2": dict(cls="Qwen2ForCausalLM", cfg="Qwen2Config", extra=dict(tie_word_embeddings=True)),
    "qwen3": dict(cls="Qwen3ForCausalLM", cfg="Qwen3Config", extra=dict(tie_word_embeddings=False, head_dim=16)),
}


def make_hf_checkpoint(family: str, out: Path, seed: int = 0, vocab: int = 97, **kw):
    """Save a tiny random model of `family` as safetensors in `out`; returns the torch model."""
    import torch
    import transformers

    spec = FAMILIES[family]
    args = dict(vocab_size=vocab, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                initializer_range=0.2, rms_norm_eps=1e-6, rope_theta=1000.0)
    args.update(spec["extra"])
    args.update(kw)
    config = getattr(transformers, spec["cfg"])(**args)
    torch.manual_seed(seed)
    model = getattr(transformers, spec["cls"])(config).eval()
    with torch.no_grad():  # biases and norms default to 0/1: randomise them so they are exercised
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(out, safe_serialization=True)
    return model
