"""Tokenizer parity and behaviour, with no download: every tokenizer is trained here on generated text.

Byte-level BPE tokenizer.json files (Qwen2-, Llama-3- and GPT-2-style layouts) are read by vagent_jax and
by transformers' PreTrainedTokenizerFast, and must give identical ids and text on a few hundred varied
strings. The SentencePiece model is compared with transformers' LlamaTokenizer, which in transformers 5
converts the .model file into its own `tokenizers` BPE (an independent implementation), and with
sentencepiece's SentencePieceProcessor.
"""
from __future__ import annotations

import json
import random
import unicodedata

import pytest
import sentencepiece as spm
from tokenizers import Tokenizer as RustTokenizer
from transformers import LlamaTokenizer, PreTrainedTokenizerFast

from vagent_jax.tokenizer import (
    CHAT_SPECIAL_TOKENS,
    HFTokenizer,
    SentencePieceTokenizer,
    check_vocab_fits,
    load_tokenizer,
)
from vagent_jax.tokenizer_train import BYTE_BPE_LAYOUTS, train_byte_bpe, train_sentencepiece

WORDS = ("the agent calls a tool and reads its result then answers with the final value "
         "Hello World It's we'll they've DON'T").split()
FRAGMENTS = (
    "def f(x):\n    return x**2 + 1\n", "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "x = [1, 2, 3]  # comment", '{"name": "calc", "arguments": {"expr": "2+2"}}', "if a != b:\n\tpass",
    "café", "naïve", "日本語のテキストです", "Привет, мир!", "مرحبا بالعالم", "😀🚀👍🏽", "e\u0301", "ß", "Ωμέγα",
    "  ", "\t", "\n", "\n\n", "   \n  ", "3.14159", "1234567890", "-42", "1e-9", "$$\\frac{a}{b}$$", "...", "!!!",
)


def make_text(rng: random.Random, n_parts: int) -> str:
    """Random mix of words, numbers, code, unicode, whitespace runs and chat special tokens."""
    parts = []
    for _ in range(n_parts):
        kind = rng.random()
        if kind < 0.5:
            parts.append(rng.choice(WORDS))
        elif kind < 0.65:
            parts.append(str(rng.randint(0, 10 ** rng.randint(1, 12))))
        elif kind < 0.95:
            parts.append(rng.choice(FRAGMENTS))
        else:
            parts.append(rng.choice(CHAT_SPECIAL_TOKENS))
        parts.append(rng.choice(("", " ", " ", " ", "  ", "\n", "\t")))
    return "".join(parts)


EDGE_STRINGS = [
    "", " ", "   ", "\n", "\n\n\n", "\t\t", " leading", "trailing  ", "a  b   c", "a\r\nb", "0", "00000000000",
    "<|im_start|>user\nhi<|im_end|>\n", "x<|eot_id|>y", "<tool_call>\n{}\n</tool_call>", "<|im_end|><|im_end|>",
    "<|im_start", "im_end|>", "< |im_end| >", "\u00a0nbsp", "\u200bzero width", "🙂", "a\u0301\u0302", "\x00\x01",
]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    rng = random.Random(0)
    return [make_text(rng, rng.randint(5, 30)) for _ in range(1200)]


@pytest.fixture(scope="module")
def strings() -> list[str]:
    rng = random.Random(1)
    return EDGE_STRINGS + [make_text(rng, rng.randint(1, 25)) for _ in range(300)]


@pytest.fixture(scope="module")
def bpe_dirs(tmp_path_factory, corpus) -> dict[str, object]:
    dirs = {}
    for layout in BYTE_BPE_LAYOUTS:
        out = tmp_path_factory.mktemp(f"bpe_{layout}")
        train_byte_bpe(corpus, out, vocab_size=800, layout=layout)
        dirs[layout] = out
    return dirs


@pytest.fixture(scope="module")
def sp_dir(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("sp")
    train_sentencepiece(corpus, out, vocab_size=800)
    return out


@pytest.mark.parametrize("layout", BYTE_BPE_LAYOUTS)
def test_byte_bpe_ids_and_text_match_transformers(layout, bpe_dirs, strings):
    ours = load_tokenizer(bpe_dirs[layout])
    assert isinstance(ours, HFTokenizer)
    ref = PreTrainedTokenizerFast(tokenizer_file=str(bpe_dirs[layout] / "tokenizer.json"))
    for s in strings:
        ids = ours.encode(s)
        assert ids == ref.encode(s, add_special_tokens=False), repr(s)
        for skip in (False, True):
            assert ours.decode(ids, skip_special=skip) == ref.decode(
                ids, skip_special_tokens=skip, clean_up_tokenization_spaces=False), repr(s)
        expected = unicodedata.normalize("NFC", s) if layout == "qwen2" else s
        assert ours.decode(ids) == expected, repr(s)


def test_llama3_layout_bos_matches_post_processor(bpe_dirs, strings):
    ours = load_tokenizer(bpe_dirs["llama3"])
    ref = PreTrainedTokenizerFast(tokenizer_file=str(bpe_dirs["llama3"] / "tokenizer.json"))
    assert ours.bos_id == ours.token_to_id("<|begin_of_text|>")
    assert ours.eos_id == ours.token_to_id("<|eot_id|>")
    assert ours.pad_id == ours.token_to_id("<|end_of_text|>")
    for s in strings[:50]:
        assert ours.encode(s, add_bos=True) == ref.encode(s)


def test_sentencepiece_matches_transformers_and_processor(sp_dir, strings):
    ours = load_tokenizer(sp_dir)
    assert isinstance(ours, SentencePieceTokenizer)
    ref = LlamaTokenizer.from_pretrained(str(sp_dir), add_prefix_space=False, legacy=False)
    proc = spm.SentencePieceProcessor(model_file=str(sp_dir / "tokenizer.model"))
    for s in strings:
        ids = ours.encode(s)
        assert ids == ref.encode(s, add_special_tokens=False), repr(s)
        assert ids == proc.encode(s), repr(s)
        assert ours.decode(ids) == s, repr(s)


def test_sentencepiece_control_pieces_in_text(sp_dir):
    tok = load_tokenizer(sp_dir / "tokenizer.model")
    ids = tok.encode("<s>hi</s>")
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and len(ids) >= 3
    assert tok.decode(ids) == "<s>hi</s>"
    assert tok.decode(ids, skip_special=True) == "hi"
    assert tok.encode("hi", add_bos=True) == [tok.bos_id, *tok.encode("hi")]
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 3)


@pytest.mark.parametrize("kind", ["sp", *BYTE_BPE_LAYOUTS])
def test_chat_tokens_are_single_ids(kind, sp_dir, bpe_dirs):
    tok = load_tokenizer(sp_dir if kind == "sp" else bpe_dirs[kind])
    for piece in CHAT_SPECIAL_TOKENS:
        token_id = tok.token_to_id(piece)
        assert token_id is not None and tok.id_to_token(token_id) == piece
        ids = tok.encode(f"ab{piece}cd")
        assert ids.count(token_id) == 1
        assert tok.decode(ids) == f"ab{piece}cd"
    # Tool-call tags survive skip_special (parsers read them); the turn markers do not.
    ids = tok.encode("<|im_start|>x<tool_call>y</tool_call><|im_end|>")
    assert tok.decode(ids, skip_special=True) == "x<tool_call>y</tool_call>"
    assert tok.is_special(tok.token_to_id("<|im_end|>"))
    assert not tok.is_special(tok.token_to_id("<tool_call>"))
    assert tok.token_to_id("<|no_such_token|>") is None


def test_load_tokenizer_dispatch_and_errors(tmp_path, sp_dir, bpe_dirs):
    assert isinstance(load_tokenizer(bpe_dirs["gpt2"] / "tokenizer.json"), HFTokenizer)
    assert isinstance(load_tokenizer(sp_dir / "tokenizer.model"), SentencePieceTokenizer)
    with pytest.raises(FileNotFoundError, match="neither tokenizer.json nor tokenizer.model"):
        load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "vocab.txt").write_text("a\n")
    with pytest.raises(ValueError, match="vocab.txt"):
        load_tokenizer(tmp_path / "vocab.txt")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        load_tokenizer(tmp_path / "broken.json")
    (tmp_path / "broken.model").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="broken.model"):
        load_tokenizer(tmp_path / "broken.model")


def test_hf_config_tokens_and_truncation(tmp_path, bpe_dirs):
    rust = RustTokenizer.from_file(str(bpe_dirs["gpt2"] / "tokenizer.json"))
    rust.enable_truncation(4)
    rust.save(str(tmp_path / "tokenizer.json"))
    # No tokenizer_config.json: eos falls back to <|endoftext|>; stored truncation is ignored.
    tok = load_tokenizer(tmp_path)
    assert tok.eos_id == tok.token_to_id("<|endoftext|>") and tok.bos_id is None and tok.pad_id is None
    assert len(tok.encode("the agent calls a tool and reads its result")) > 4
    config = {
        "bos_token": {"__type": "AddedToken", "content": "<|begin_of_text|>"},
        "eos_token": "<|im_end|>",
        "added_tokens_decoder": {str(rust.get_vocab_size()): {"content": "<think>", "special": False}},
        "additional_special_tokens": ["<|extra_0|>"],
    }
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = load_tokenizer(tmp_path)
    assert tok.bos_id == tok.token_to_id("<|begin_of_text|>")
    assert tok.eos_id == tok.token_to_id("<|im_end|>")
    think, extra = tok.token_to_id("<think>"), tok.token_to_id("<|extra_0|>")
    assert tok.encode("a<think>b").count(think) == 1 and not tok.is_special(think) and tok.is_special(extra)
    assert tok.vocab_size == max(think, extra) + 1
    assert think == rust.get_vocab_size() and extra == think + 1
    config["added_tokens_decoder"] = {"5": {"content": "<|im_end|>"}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="tokenizer_config.json: added_tokens_decoder puts '<.im_end.>' at id 5"):
        load_tokenizer(tmp_path)
    del config["added_tokens_decoder"]
    config["eos_token"] = "<|nope|>"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"tokenizer_config.json:eos_token '<\|nope\|>'"):
        load_tokenizer(tmp_path)
    assert load_tokenizer(tmp_path, eos_token="<|eot_id|>").eos_id == tok.token_to_id("<|eot_id|>")


def test_bad_ids_and_inputs_name_the_tokenizer(bpe_dirs, sp_dir):
    for tok in (load_tokenizer(bpe_dirs["qwen2"]), load_tokenizer(sp_dir)):
        with pytest.raises(ValueError, match=f"{tok.source}.*outside"):
            tok.decode([0, tok.vocab_size])
        with pytest.raises(ValueError, match="outside"):
            tok.id_to_token(-1)
        with pytest.raises(TypeError, match="not an integer"):
            tok.decode([1.5])
        with pytest.raises(TypeError, match="expects str"):
            tok.encode(b"bytes")
    qwen = load_tokenizer(bpe_dirs["qwen2"])
    with pytest.raises(ValueError, match="no bos token"):
        qwen.encode("x", add_bos=True)


def test_check_vocab_fits(sp_dir):
    tok = load_tokenizer(sp_dir)
    check_vocab_fits(tok, tok.vocab_size, "model.vocab_size")
    with pytest.raises(ValueError, match=rf"{tok.source}.*model.vocab_size.*{tok.vocab_size - 1} embedding rows"):
        check_vocab_fits(tok, tok.vocab_size - 1, "model.vocab_size")
    with pytest.raises(ValueError, match="positive int"):
        check_vocab_fits(tok, 0, "model.vocab_size")


def test_training_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="no non-empty line"):
        train_sentencepiece(["", "\n"], tmp_path)
    with pytest.raises(ValueError, match="model_type"):
        train_sentencepiece(["abc"], tmp_path, model_type="word")
    with pytest.raises(ValueError, match="layout"):
        train_byte_bpe(["abc"], tmp_path, layout="bert")
    with pytest.raises(ValueError, match="needs special tokens"):
        train_byte_bpe(["abc"], tmp_path, layout="llama3", special_tokens=("<|im_end|>",))
