"""One generic name -> object registry, used for every kind the suite lets a config name.

A config never holds code: it names things, and each kind (models, datasets, optimizers, ...) has a
:class:`Registry` that maps those names to builders. ``dlsuite list KIND`` prints a registry.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from dlsuite.errors import ConfigError, did_you_mean

T = TypeVar("T")

#: Every registry by kind name, in creation order; ``dlsuite list`` reads this.
REGISTRIES: dict[str, Registry] = {}  # type: ignore[type-arg]


class Registry(Generic[T]):
    """Names mapped to objects of one kind; duplicate names are refused.

    Args:
        kind: plural name of the kind, as used by ``dlsuite list`` (``"models"``).
        help: one line saying what the kind is.
    """

    def __init__(self, kind: str, help: str = "") -> None:
        if kind in REGISTRIES:
            raise ValueError(f"a registry for {kind!r} exists already")
        self.kind = kind
        self.help = help
        self._items: dict[str, T] = {}
        REGISTRIES[kind] = self

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` under ``name``; a name can be registered once only."""
        if name in self._items:
            raise ValueError(f"{self.kind}: {name!r} is registered already")
        self._items[name] = obj

    def get(self, name: str, *, what: str | None = None) -> T:
        """Look a name up, or raise a :class:`ConfigError` listing the valid names."""
        try:
            return self._items[name]
        except KeyError:
            label = what or self.kind.rstrip("s")
            raise ConfigError(
                f"unknown {label} {name!r}{did_you_mean(str(name), self._items)}; "
                f"valid: {', '.join(sorted(self._items))}"
            ) from None

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern``, sorted."""
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)


def get_registry(kind: str) -> Registry:  # type: ignore[type-arg]
    """The registry of ``kind``, or a :class:`ConfigError` listing the kinds."""
    import dlsuite.catalog  # noqa: F401  (importing fills every registry)

    if kind not in REGISTRIES:
        raise ConfigError(f"unknown kind {kind!r}{did_you_mean(kind, REGISTRIES)}; valid: {', '.join(REGISTRIES)}")
    return REGISTRIES[kind]
