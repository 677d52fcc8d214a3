"""Frozen dataclass configs loaded from YAML with `key=value` overrides, validated on load.

An unknown key, a wrong type or a failed `validate()` stops with a ConfigError naming the full dotted key
from the root of the loaded config (`rl.engine.sampling.temperature`), so a bad recipe fails before any
compile. Nested dataclasses map to nested YAML mappings; each is validated once, when it is built, and a
`validate()` names keys relative to its own dataclass: the loader (and `config_scope` for checks made
later, e.g. against the loaded model's vocabulary) prefixes the path to it. Numbers are read by the
field's type, so `lr: 1e-7` (a string to YAML 1.1) is a float and `steps: 1e3` an int.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Iterator, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type, or out of range; the message names the key.

    `key` (the dotted key, relative to where the error was raised) and `detail` are set for range errors
    from `require`, so an enclosing `config_scope` can prefix the path."""

    def __init__(self, message: str, key: str | None = None, detail: str | None = None,
                 related: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.key, self.detail, self.related = key, detail, related

    @classmethod
    def at(cls, key: str, detail: str, related: tuple[str, ...] = ()) -> "ConfigError":
        """The error for `key` (and the other keys involved, `related`): "config key 'KEY' (with ...): DETAIL"."""
        also = f" (with {', '.join(repr(r) for r in related)})" if related else ""
        return cls(f"config key '{key}'{also}: {detail}", key, detail, related)

    def prefixed(self, prefix: str) -> "ConfigError":
        """The same error with `prefix.` before its keys (unchanged when it has no key or prefix is empty)."""
        if self.key is None or not prefix:
            return self
        return ConfigError.at(f"{prefix}.{self.key}", self.detail or "", tuple(f"{prefix}.{r}" for r in self.related))


@contextlib.contextmanager
def config_scope(prefix: str) -> Iterator[None]:
    """Re-raise a keyed ConfigError from the block with `prefix.` before its key: checks of a section
    made outside the loader (`cfg.engine.validate(vocab)`, a stage of `vagent demo`) name the full path."""
    try:
        yield
    except ConfigError as e:
        raise e.prefixed(prefix) from None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp` (after YAML parsing) and return it converted."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"config key '{key}': {value!r} does not match {tp}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"config key '{key}': {value!r} is not one of {typing.get_args(tp)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {type(value).__name__} {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"config key '{key}': expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        elem = args[0] if args else Any
        out = [_coerce(v, elem, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp) or (Any, Any)
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping for {_type_name(tp)}, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if tp is float:
        number = _number(value)
        if number is None:
            raise ConfigError(f"config key '{key}': expected a number, got {type(value).__name__} {value!r}")
        return float(number)
    if tp is int:
        number = _number(value)
        if number is None or not float(number).is_integer() or not math.isfinite(number):
            raise ConfigError(f"config key '{key}': expected an integer, got {type(value).__name__} {value!r}")
        return int(number)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {type(value).__name__} {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    return value


def _number(value: Any) -> int | float | None:
    """A number written as users write it: an int or float, or a string such as '1e-7' or '3' (YAML 1.1
    reads exponents without a dot as strings); None for anything else (bools included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            return None
    return None


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build the frozen dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in fields:
            raise ConfigError(f"unknown config key '{key}' (known: {', '.join(sorted(fields))})")
        default = fields[k].default
        if isinstance(v, dict) and dataclasses.is_dataclass(default):
            v = _deep_merge(dataclasses.asdict(default), v)  # a partial section keeps the field's own default
        kwargs[k] = _coerce(v, hints[k], key)
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"config '{prefix or cls.__name__}': {e}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as e:
            raise e.prefixed(prefix) from None
        except ValueError as e:
            raise ConfigError(f"config '{prefix or cls.__name__}': {e}") from None
    return obj


def to_dict(cfg: Any) -> dict[str, Any]:
    """The plain-data form of a config (for logging, hashing and saving beside checkpoints)."""
    return dataclasses.asdict(cfg)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into (['a','b','c'], YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value")
    key, raw = text.split("=", 1)
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    return key.split("."), yaml.safe_load(raw) if raw != "" else ""


def merge_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key=value` overrides to the nested mapping `data` (returns a new mapping)."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a mapping")
            node = child
        node[path[-1]] = value
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Load YAML `path` (or the dataclass defaults when None) with overrides into `cls`."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file '{p}' does not exist")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"config file '{p}' is not valid YAML: {e}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file '{p}' must hold a mapping at top level")
        data = loaded or {}
    data = merge_overrides(data, overrides or [])
    return from_dict(cls, data)


def require(cond: bool, key: str, message: str, related: tuple[str, ...] = ()) -> None:
    """Raise ConfigError naming `key` and the `related` keys of the same check (relative to the dataclass
    being validated) unless `cond` holds."""
    if not cond:
        raise ConfigError.at(key, message, related)
