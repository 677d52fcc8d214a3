"""Train the project's own tokenizers from texts, so a run needs no download.

Two kinds, both holding the chat special tokens as single ids:
- `train_sentencepiece`: a SentencePiece `.model` (BPE or unigram), lossless on any text.
- `train_byte_bpe`: a byte-level BPE `tokenizer.json` (+ tokenizer_config.json) laid out like Qwen2's,
  Llama 3's or GPT-2's (normaliser, pre-tokeniser regex, decoder), read by `HFTokenizer` and by
  transformers' PreTrainedTokenizerFast alike.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as RustTokenizer

from vagent_jax.tokenizer import (
    CHAT_SPECIAL_TOKENS,
    NON_SPECIAL_CHAT_TOKENS,
    HFTokenizer,
    SentencePieceTokenizer,
)

# Pre-tokeniser patterns (public facts of each model family's tokenizer.json).
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
# (bos, eos, pad) written to tokenizer_config.json per layout: the instruct models' choices.
_CONFIG_TOKENS = {
    "qwen2": (None, "<|im_end|>", "<|endoftext|>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>"),
    "gpt2": (None, "<|endoftext|>", None),
}
BYTE_BPE_LAYOUTS: tuple[str, ...] = tuple(_CONFIG_TOKENS)


def train_sentencepiece(
    texts: Iterable[str],
    output_dir: str | os.PathLike[str],
    vocab_size: int = 1000,
    model_type: str = "bpe",
    special_tokens: Sequence[str] = CHAT_SPECIAL_TOKENS,
) -> SentencePieceTokenizer:
    """Train a SentencePiece model on `texts`; writes output_dir/tokenizer.model (and .vocab).

    Lossless by construction: identity normalisation, no dummy prefix, whitespace kept as is, and
    byte_fallback, so decode(encode(s)) == s for any string. `special_tokens` become user-defined pieces
    (one id each), and so does "\\n", so a chat role header ending in a newline always ends on a token
    boundary. Ids 0-3 are <unk>, <s>, </s>, <pad>. Texts are split into lines for training.
    """
    if model_type not in ("bpe", "unigram"):
        raise ValueError(f"train_sentencepiece: model_type must be 'bpe' or 'unigram', got {model_type!r}")
    lines = [line for text in texts for line in text.split("\n") if line]
    if not lines:
        raise ValueError("train_sentencepiece: texts hold no non-empty line to train on")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    user_defined = list(dict.fromkeys([*special_tokens, "\n"]))
    try:
        spm.SentencePieceTrainer.Train(
            sentence_iterator=iter(lines), model_prefix=str(out / "tokenizer"), vocab_size=vocab_size,
            model_type=model_type, byte_fallback=True, user_defined_symbols=user_defined,
            normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
            split_digits=True, allow_whitespace_only_pieces=True, character_coverage=1.0,
            unk_id=0, bos_id=1, eos_id=2, pad_id=3, hard_vocab_limit=False, max_sentence_length=1 << 16,
            num_threads=1, minloglevel=2,
        )
    except RuntimeError as e:
        raise ValueError(f"SentencePiece training into {out} failed (vocab_size={vocab_size}): {e}") from e
    return SentencePieceTokenizer(out / "tokenizer.model")


def train_byte_bpe(
    texts: Iterable[str],
    output_dir: str | os.PathLike[str],
    vocab_size: int = 1000,
    layout: str = "qwen2",
    special_tokens: Sequence[str] = CHAT_SPECIAL_TOKENS,
) -> HFTokenizer:
    """Train a byte-level BPE and write output_dir/tokenizer.json and tokenizer_config.json.

    layout "qwen2": NFC normaliser + Qwen2 regex (single digits); "llama3": Llama 3 regex (digit runs of
    up to 3) and a post-processor that prepends <|begin_of_text|>; "gpt2": GPT-2's built-in byte-level
    regex (it splits whitespace by what follows, so chat rendering cannot match whole-text tokenisation
    with it: use qwen2 or llama3 for chat). `special_tokens` get the first ids; the tool-call tags among
    them are added as non-special.
    The layouts' own chat tokens (bos/eos/pad of _CONFIG_TOKENS) must be among `special_tokens`.
    """
    if layout not in _CONFIG_TOKENS:
        raise ValueError(f"train_byte_bpe: layout must be one of {BYTE_BPE_LAYOUTS}, got {layout!r}")
    missing = [t for t in _CONFIG_TOKENS[layout] if t is not None and t not in special_tokens]
    if missing:
        raise ValueError(f"train_byte_bpe: layout {layout!r} needs special tokens {missing}")
    tok = RustTokenizer(models.BPE())
    if layout == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        pattern = QWEN2_PATTERN if layout == "qwen2" else LLAMA3_PATTERN
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    if layout == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[
            AddedToken(t, special=t not in NON_SPECIAL_CHAT_TOKENS, normalized=False) for t in special_tokens
        ],
    )
    tok.train_from_iterator(texts, trainer)
    if tok.get_vocab_size() <= len(special_tokens):
        raise ValueError("train_byte_bpe: texts are empty; nothing was learned")
    # The trainer marks all its tokens special; restate the tool-call tags as non-special added tokens.
    tool_tags = [t for t in special_tokens if t in NON_SPECIAL_CHAT_TOKENS]
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in tool_tags])
    bos, eos, pad = _CONFIG_TOKENS[layout]
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config = {"bos_token": bos, "eos_token": eos, "pad_token": pad, "add_bos_token": bos is not None}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return HFTokenizer(out / "tokenizer.json")
