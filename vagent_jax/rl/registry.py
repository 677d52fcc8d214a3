"""Name -> function registries for RL pieces chosen by config (advantage estimators, ...).

A registry is the only list of valid names for its kind: configs validate against `names()` and the
learner looks the function up with `get`, so adding an estimator is one decorated function.
"""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

from vagent_jax.config import ConfigError

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """Functions of one kind registered by unique name (e.g. `ADVANTAGES.register("grpo")`)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._fns: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator registering `fn` under `name`; a second function under the same name is an error."""

        def deco(fn: F) -> F:
            if name in self._fns:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._fns[name] = fn
            return fn

        return deco

    def get(self, name: str, key: str | None = None) -> F:
        """The function registered as `name`; unknown names raise ConfigError naming config `key`."""
        if name not in self._fns:
            where = f"config key '{key}': " if key else ""
            raise ConfigError(f"{where}unknown {self.kind} {name!r} (known: {', '.join(self.names())})")
        return self._fns[name]

    def names(self) -> tuple[str, ...]:
        """All registered names, sorted."""
        return tuple(sorted(self._fns))

    def __contains__(self, name: object) -> bool:
        return name in self._fns
