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


# Chat tokens of both templates: special ones, and the tool tags (added but not special, as in Qwen2.5).
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<|eot_id|>"]
TOOL_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
TOKENIZER_TEXTS = ["Letter: a", "Letter: b", "Letter: ?", "Answer with <answer>LETTER</answer>.",
                   "<answer>a</answer>", "<answer>b</answer>", "system", "user", "assistant", "hello world 123"]


# The released pre-tokenizer regexes (Llama 3 groups up to 3 digits, Qwen2 splits every digit);
# transformers 5 rebuilds a Qwen2 tokenizer with its own regex, so the fixture must use the same one.
PRETOKENIZE_REGEX = {
    "llama": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}


def make_hf_tokenizer(out: Path, template: str | None = "chatml", vocab_size: int = 300, regex: str = "qwen") -> int:
    """Write a byte-level BPE tokenizer.json (trained on a few strings with `tokenizers`, pre-tokenized
    by the released `regex`) and a tokenizer_config.json whose chat_template is `template`'s Jinja
    (None: no chat template) into `out`. Returns the tokenizer's number of ids."""
    import json

    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from vagent_jax.chat_template import HF_CHAT_TEMPLATES

    tk = tokenizers.Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(PRETOKENIZE_REGEX[regex]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=SPECIAL_TOKENS, show_progress=False)
    tk.train_from_iterator(TOKENIZER_TEXTS * 4, trainer)
    tk.add_tokens([tokenizers.AddedToken(t, special=False, normalized=False) for t in TOOL_TOKENS])
    out.mkdir(parents=True, exist_ok=True)
    tk.save(str(out / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>",
              "pad_token": "<|endoftext|>", "model_max_length": 128}
    if template is not None:
        config["chat_template"] = HF_CHAT_TEMPLATES[template]
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return max(tk.get_vocab(with_added_tokens=True).values()) + 1


def make_hf_model_dir(family: str, out: Path, seed: int = 0, vocab: int = 320, template: str | None = "chatml",
                      **kw):
    """A complete HF model directory: a tiny random `family` checkpoint plus make_hf_tokenizer's files."""
    model = make_hf_checkpoint(family, out, seed=seed, vocab=vocab, **kw)
    make_hf_tokenizer(out, template, regex="llama" if family == "llama" else "qwen")
    return model
