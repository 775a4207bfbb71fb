"""Name registries so the CLI and config files can refer to components by kebab-case names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from pixelguard.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from stable names to factories, with helpful errors for unknown names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}
        self._aliases: dict[str, str] = {}

    def alias(self, short: str, name: str) -> None:
        """Let ``short`` stand for the registered ``name`` (not listed by :meth:`names`)."""
        self._aliases[short] = name

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``factory`` under ``name``."""

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._items:
                raise ConfigError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = factory
            return factory

        return decorate

    def create(self, name: str, **params: object) -> T:
        """Build the component registered as ``name`` with ``params``."""
        return self.get(name)(**params)

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name``."""
        try:
            return self._items[self._aliases.get(name, name)]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._items)
