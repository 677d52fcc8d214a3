"""Registry of environments by name: the only list of valid environment names.

Built-in environments register themselves when their module is imported; `get_env` imports the built-in
modules on first use, and `env_modules` lets a worker process import extra modules that register more.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Iterable

from vagent_jax.envs.base import Environment

_REGISTRY: dict[str, Callable[..., Environment]] = {}
_BUILTIN_MODULES = (
    "vagent_jax.envs.arithmetic",
    "vagent_jax.envs.calculator",
    "vagent_jax.envs.python_env",
    "vagent_jax.envs.math_answer",
    "vagent_jax.envs.countdown",
    "vagent_jax.envs.reasoning_gym_env",
    "vagent_jax.envs.mixture",
    "vagent_jax.envs.rubric_env",
)
_loaded = False


def register_env(name: str) -> Callable[[Callable[..., Environment]], Callable[..., Environment]]:
    """Class/factory decorator: `@register_env("calculator")`. A second, different factory is an error."""

    def deco(factory: Callable[..., Environment]) -> Callable[..., Environment]:
        old = _REGISTRY.get(name)
        if old is not None and old is not factory and getattr(old, "__qualname__", None) != getattr(
            factory, "__qualname__", object()
        ):
            raise ValueError(f"environment name {name!r} is already registered to {old!r}")
        _REGISTRY[name] = factory
        return factory

    return deco


def import_env_modules(modules: Iterable[str]) -> None:
    """Import modules whose import registers environments (built-ins, plugins, test fixtures)."""
    for mod in modules:
        try:
            importlib.import_module(mod)
        except ImportError as e:
            raise ImportError(f"environment module {mod!r} cannot be imported: {e}") from e


def _ensure_builtins() -> None:
    global _loaded
    if not _loaded:
        import_env_modules(_BUILTIN_MODULES)
        _loaded = True


def env_names() -> list[str]:
    """Sorted names of every registered environment."""
    _ensure_builtins()
    return sorted(_REGISTRY)


def get_env(name: str, **kwargs: Any) -> Environment:
    """Build the environment registered under `name` with keyword arguments `kwargs`."""
    _ensure_builtins()
    if name not in _REGISTRY:
        raise KeyError(f"unknown environment {name!r}; registered: {sorted(_REGISTRY)}")
    try:
        return _REGISTRY[name](**kwargs)
    except TypeError as e:
        raise TypeError(f"environment {name!r}: bad arguments {kwargs!r}: {e}") from e
