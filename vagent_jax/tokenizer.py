"""Tokenizers behind one interface: SentencePiece `.model` files and Hugging Face `tokenizer.json` files.

The trainer, the data pipeline and the decode engine only see `Tokenizer`: ids in, ids out, plus the
special tokens a chat template needs. Chat special tokens (<|im_start|>, <|eot_id|>, <tool_call>, ...)
present in a vocabulary always encode as one id each, also when they appear inside a text.
vagent_jax.tokenizer_train builds the project's own tokenizers so nothing is downloaded at run time.
"""
from __future__ import annotations

import abc
import functools
import json
import operator
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm
import tokenizers
from sentencepiece import sentencepiece_model_pb2 as model_pb2

# Chat-format tokens of ChatML (Qwen2.5) and Llama 3, and the tool-call tags both formats' agents emit.
CHAT_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|im_start|>", "<|im_end|>", "<|endoftext|>",
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
    "<|eom_id|>",
    "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
)

# Text the agent writes and tool parsers read: added as tokens but not special, so
# decode(skip_special=True) keeps them (as in Qwen2.5's vocabulary).
NON_SPECIAL_CHAT_TOKENS: tuple[str, ...] = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")

# End-of-sequence pieces tried, in order, when a tokenizer file does not name its eos token.
_EOS_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")


class Tokenizer(abc.ABC):
    """Text <-> ids for one vocabulary; `source` is the file it was loaded from (named in every error).

    vocab_size is the number of ids (largest id + 1, added tokens included), the minimum number of
    embedding rows a model needs. bos_id and pad_id are None when the vocabulary has none.
    """

    source: str
    bos_id: int | None
    eos_id: int
    pad_id: int | None

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids: largest id + 1."""

    @property
    @abc.abstractmethod
    def special_tokens(self) -> dict[str, int]:
        """Special tokens (piece -> id): the ids that decode(skip_special=True) drops."""

    @abc.abstractmethod
    def _encode(self, text: str) -> list[int]:
        """Ids of `text` with no bos; special-token strings inside `text` map to their single ids."""

    @abc.abstractmethod
    def _decode(self, ids: list[int], skip_special: bool) -> str:
        """Text of already range-checked ids."""

    @abc.abstractmethod
    def token_to_id(self, piece: str) -> int | None:
        """Id of a vocabulary piece (or added token), None when the vocabulary lacks it."""

    @abc.abstractmethod
    def _id_to_token(self, token_id: int) -> str:
        """Piece of an already range-checked id."""

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Token ids of `text`; with add_bos the bos id is prepended (an error if there is none)."""
        if not isinstance(text, str):
            raise TypeError(f"tokenizer {self.source}: encode expects str, got {type(text).__name__}")
        ids = self._encode(text)
        if add_bos:
            if self.bos_id is None:
                raise ValueError(f"tokenizer {self.source} has no bos token; cannot encode with add_bos=True")
            ids = [self.bos_id, *ids]
        return ids

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        """Text of `ids`; with skip_special the special tokens are left out."""
        checked = [self._check_id(i) for i in ids]
        return self._decode(checked, skip_special)

    def id_to_token(self, token_id: int) -> str:
        """Vocabulary piece of `token_id` (an error when out of range)."""
        return self._id_to_token(self._check_id(token_id))

    def is_special(self, token_id: int) -> bool:
        """Whether `token_id` is one of `special_tokens`."""
        return token_id in self._special_ids

    @functools.cached_property
    def _special_ids(self) -> frozenset[int]:
        return frozenset(self.special_tokens.values())

    def _check_id(self, token_id: Any) -> int:
        try:
            value = operator.index(token_id)
        except TypeError:
            value = None
        if value is None or isinstance(token_id, bool):
            raise TypeError(f"tokenizer {self.source}: token id {token_id!r} is not an integer")
        if not 0 <= value < self.vocab_size:
            raise ValueError(f"tokenizer {self.source}: token id {value} is outside [0, {self.vocab_size})")
        return value


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece `.model` file. Control pieces (<s>, </s>, ...) found in a text encode as their ids
    (SentencePiece alone would spell them out); user-defined pieces are matched by SentencePiece itself.
    Special tokens are the control pieces and the user-defined pieces other than whitespace and
    NON_SPECIAL_CHAT_TOKENS. Text on each side of a control piece is encoded and decoded on its own
    (as transformers does), which matters only for models with a dummy prefix.
    """

    def __init__(self, path: str | os.PathLike[str], eos_token: str | None = None) -> None:
        self.source = str(path)
        if not Path(path).is_file():
            raise FileNotFoundError(f"SentencePiece model file {self.source} does not exist")
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.Load(self.source)
        except (OSError, RuntimeError) as e:
            raise ValueError(f"cannot load SentencePiece model {self.source}: {e}") from e
        self._size = self._sp.GetPieceSize()
        control, user_defined = _sentencepiece_piece_kinds(self._sp)
        self._control = {self._sp.IdToPiece(i): i for i in control}
        self._special = dict(self._control)
        for i in user_defined:
            piece = self._sp.IdToPiece(i)
            if piece.strip() and piece not in NON_SPECIAL_CHAT_TOKENS:
                self._special[piece] = i
        longest_first = sorted(self._control, key=len, reverse=True)
        self._control_re = re.compile("|".join(map(re.escape, longest_first))) if longest_first else None
        self.bos_id = self._optional_id(self._sp.bos_id())
        self.pad_id = self._optional_id(self._sp.pad_id())
        if eos_token is not None:
            self.eos_id = _required_piece(self, eos_token, "eos_token")
        elif self._sp.eos_id() >= 0:
            self.eos_id = self._sp.eos_id()
        else:
            raise ValueError(f"SentencePiece model {self.source} defines no eos piece; pass eos_token")

    @staticmethod
    def _optional_id(value: int) -> int | None:
        return value if value >= 0 else None

    @property
    def vocab_size(self) -> int:
        """Number of SentencePiece pieces."""
        return self._size

    @property
    def special_tokens(self) -> dict[str, int]:
        """Control pieces and user-defined pieces (other than whitespace and tool-call tags)."""
        return dict(self._special)

    def _encode(self, text: str) -> list[int]:
        if self._control_re is None:
            return list(self._sp.EncodeAsIds(text))
        ids: list[int] = []
        start = 0
        for match in self._control_re.finditer(text):
            if match.start() > start:
                ids.extend(self._sp.EncodeAsIds(text[start:match.start()]))
            ids.append(self._control[match.group()])
            start = match.end()
        if start < len(text):
            ids.extend(self._sp.EncodeAsIds(text[start:]))
        return ids

    def _decode(self, ids: list[int], skip_special: bool) -> str:
        special = self._special_ids
        if skip_special:
            return self._sp.DecodeIds([i for i in ids if i not in special])
        # SentencePiece drops control pieces when decoding: spell them out between runs of other ids.
        control = set(self._control.values())
        parts: list[str] = []
        run: list[int] = []
        for i in ids:
            if i in control:
                if run:
                    parts.append(self._sp.DecodeIds(run))
                    run = []
                parts.append(self._sp.IdToPiece(i))
            else:
                run.append(i)
        if run:
            parts.append(self._sp.DecodeIds(run))
        return "".join(parts)

    def token_to_id(self, piece: str) -> int | None:
        """Id of `piece`, None when it is not a piece of the model."""
        token_id = self._sp.PieceToId(piece)
        if token_id == self._sp.unk_id() and piece != self._sp.IdToPiece(token_id):
            return None
        return token_id

    def _id_to_token(self, token_id: int) -> str:
        return self._sp.IdToPiece(token_id)


def _sentencepiece_piece_kinds(sp: spm.SentencePieceProcessor) -> tuple[list[int], list[int]]:
    """Ids of the (control or unknown) pieces and of the user-defined pieces, read from the model proto."""
    proto = model_pb2.ModelProto()
    proto.ParseFromString(sp.serialized_model_proto())
    kinds = model_pb2.ModelProto.SentencePiece
    control = [i for i, p in enumerate(proto.pieces) if p.type in (kinds.CONTROL, kinds.UNKNOWN)]
    user_defined = [i for i, p in enumerate(proto.pieces) if p.type == kinds.USER_DEFINED]
    return control, user_defined


class HFTokenizer(Tokenizer):
    """A Hugging Face `tokenizer.json`, read with the `tokenizers` library.

    Added tokens come from tokenizer.json; tokenizer_config.json beside it (when present) names
    bos/eos/pad and may add tokens (`added_tokens_decoder`, `additional_special_tokens`) missing from
    tokenizer.json, as transformers does. Truncation and padding stored in the file are switched off.
    Without a named eos token the first of <|endoftext|>, <|end_of_text|>, </s>, <eos> present is used.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        config_path: str | os.PathLike[str] | None = None,
        eos_token: str | None = None,
    ) -> None:
        self.source = str(path)
        if not Path(path).is_file():
            raise FileNotFoundError(f"tokenizer file {self.source} does not exist")
        try:
            self._tk = tokenizers.Tokenizer.from_file(self.source)
        except Exception as e:  # the Rust parser raises a bare Exception
            raise ValueError(f"cannot parse tokenizer file {self.source}: {e}") from e
        self._tk.no_truncation()
        self._tk.no_padding()
        config_file = Path(config_path) if config_path is not None else Path(path).with_name("tokenizer_config.json")
        config = _read_json(config_file) if config_file.is_file() else {}
        self._add_config_tokens(config, config_file)
        self._size = max(self._tk.get_vocab(with_added_tokens=True).values()) + 1
        self._special = {
            t.content: i for i, t in self._tk.get_added_tokens_decoder().items() if t.special
        }
        self.bos_id = self._config_token(config, "bos_token", config_file)
        self.pad_id = self._config_token(config, "pad_token", config_file)
        if eos_token is not None:
            self.eos_id = _required_piece(self, eos_token, "eos_token")
        else:
            eos = self._config_token(config, "eos_token", config_file)
            if eos is None:
                eos = next((self.token_to_id(c) for c in _EOS_CANDIDATES if self.token_to_id(c) is not None), None)
            if eos is None:
                raise ValueError(
                    f"tokenizer {self.source}: no eos token (none named in {config_file}, none of "
                    f"{_EOS_CANDIDATES} in the vocabulary); pass eos_token"
                )
            self.eos_id = eos

    def _add_config_tokens(self, config: dict[str, Any], config_file: Path) -> None:
        """Add tokens that tokenizer_config.json lists but tokenizer.json lacks; a token listed in
        `added_tokens_decoder` must end up at the id it is listed under."""
        listed = config.get("added_tokens_decoder", {})
        wanted = [(_token_content(e, config_file), bool(e.get("special", True))) for e in listed.values()]
        for key in ("additional_special_tokens", "extra_special_tokens"):
            extra = config.get(key) or []
            extra = extra.values() if isinstance(extra, dict) else extra
            wanted.extend((_token_content(t, config_file), True) for t in extra)
        for content, special in wanted:
            if self._tk.token_to_id(content) is None:
                token = tokenizers.AddedToken(content, special=special, normalized=False)
                if special:
                    self._tk.add_special_tokens([token])
                else:
                    self._tk.add_tokens([token])
        for key, entry in listed.items():
            content = _token_content(entry, config_file)
            if str(self._tk.token_to_id(content)) != str(key):
                raise ValueError(
                    f"{config_file}: added_tokens_decoder puts {content!r} at id {key}, but {self.source} "
                    f"gives it id {self._tk.token_to_id(content)}"
                )

    def _config_token(self, config: dict[str, Any], key: str, config_file: Path) -> int | None:
        value = config.get(key)
        if value is None:
            return None
        return _required_piece(self, _token_content(value, config_file), f"{config_file}:{key}")

    @property
    def vocab_size(self) -> int:
        """Largest id (added tokens included) + 1."""
        return self._size

    @property
    def special_tokens(self) -> dict[str, int]:
        """Added tokens flagged special (e.g. <|im_end|>; Qwen's <tool_call> is added but not special)."""
        return dict(self._special)

    def _encode(self, text: str) -> list[int]:
        return self._tk.encode(text, add_special_tokens=False).ids

    def _decode(self, ids: list[int], skip_special: bool) -> str:
        return self._tk.decode(ids, skip_special_tokens=skip_special)

    def token_to_id(self, piece: str) -> int | None:
        """Id of a vocabulary piece or added token, None when absent."""
        return self._tk.token_to_id(piece)

    def _id_to_token(self, token_id: int) -> str:
        piece = self._tk.id_to_token(token_id)
        if piece is None:
            raise ValueError(f"tokenizer {self.source}: id {token_id} maps to no token")
        return piece


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read JSON file {path}: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at top level")
    return data


def _token_content(value: Any, where: Path) -> str:
    """A token written as a string or as an AddedToken dict {"content": ...}."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"{where}: cannot read a token from {value!r}")


def _required_piece(tokenizer: Tokenizer, piece: str, what: str) -> int:
    token_id = tokenizer.token_to_id(piece)
    if token_id is None:
        raise ValueError(f"tokenizer {tokenizer.source}: {what} {piece!r} is not in the vocabulary")
    return token_id


def load_tokenizer(path: str | os.PathLike[str], eos_token: str | None = None) -> Tokenizer:
    """Load a tokenizer from a `.model` file, a `tokenizer.json` file, or a directory holding one
    (tokenizer.json is preferred over tokenizer.model, as transformers prefers the fast tokenizer)."""
    p = Path(path)
    if p.is_dir():
        for name in ("tokenizer.json", "tokenizer.model"):
            if (p / name).is_file():
                return load_tokenizer(p / name, eos_token)
        raise FileNotFoundError(f"tokenizer directory {p} holds neither tokenizer.json nor tokenizer.model")
    if not p.is_file():
        raise FileNotFoundError(f"tokenizer path {p} does not exist")
    if p.suffix == ".model":
        return SentencePieceTokenizer(p, eos_token=eos_token)
    if p.suffix == ".json":
        return HFTokenizer(p, eos_token=eos_token)
    raise ValueError(f"tokenizer file {p}: expected a SentencePiece .model or a tokenizer .json file")


def check_vocab_fits(tokenizer: Tokenizer, embedding_rows: int, source: str) -> None:
    """Stop when the tokenizer produces ids the model cannot embed: vocab_size > embedding_rows.

    `source` names where embedding_rows came from (config key or checkpoint file)."""
    if isinstance(embedding_rows, bool) or not isinstance(embedding_rows, int) or embedding_rows <= 0:
        raise ValueError(f"{source}: embedding rows must be a positive int, got {embedding_rows!r}")
    if tokenizer.vocab_size > embedding_rows:
        raise ValueError(
            f"tokenizer {tokenizer.source} has {tokenizer.vocab_size} ids but the model ({source}) has only "
            f"{embedding_rows} embedding rows"
        )
