"""One generic name -> object registry, used for every kind the suite lets a config name.

A config never holds code: it names things, and each kind (models, datasets, optimizers, ...) has a
:class:`Registry` that maps those names to builders. ``dlsuite list KIND`` prints a registry.

An entry can be *lazy*: registered as a ``"module:attr"`` string and imported on first :meth:`get`.
Checking that a name exists (``name in REG``, :meth:`names`) never imports it, so validating a config
or listing names does not pay for Lightning, Optuna or torchvision.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, cast

from dlsuite.errors import ConfigError, did_you_mean

T = TypeVar("T")

#: Every registry by kind name, in creation order; ``dlsuite list`` reads this.
REGISTRIES: dict[str, Registry[Any]] = {}


class _Lazy:
    """A registered ``"module:attr"`` target, imported on first use."""

    __slots__ = ("target",)

    def __init__(self, target: str) -> None:
        if ":" not in target:
            raise ValueError(f"a lazy registry target is 'module:attr', got {target!r}")
        self.target = target

    def load(self) -> Any:
        module, _, attr = self.target.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


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
        self._items: dict[str, T | _Lazy] = {}
        REGISTRIES[kind] = self

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` under ``name``; a name can be registered once only (a lazy entry of
        the same name is replaced by the object its module registers when imported)."""
        if name in self._items and not isinstance(self._items[name], _Lazy):
            raise ValueError(f"{self.kind}: {name!r} is registered already")
        self._items[name] = obj

    def add_lazy(self, name: str, target: str) -> None:
        """Register ``"module:attr"`` under ``name``, imported on first :meth:`get`."""
        if name in self._items:
            raise ValueError(f"{self.kind}: {name!r} is registered already")
        self._items[name] = _Lazy(target)

    def get(self, name: str, *, what: str | None = None) -> T:
        """Look a name up (importing a lazy entry), or raise a :class:`ConfigError` listing the valid names."""
        try:
            item = self._items[name]
        except KeyError:
            raise ConfigError(self.unknown(name, what)) from None
        if isinstance(item, _Lazy):
            obj = item.load()
            # importing the module may have registered the object itself (a decorator)
            current = self._items[name]
            item = cast(T, obj) if isinstance(current, _Lazy) else current
            self._items[name] = item
        return cast(T, item)

    def check(self, name: str, *, what: str | None = None) -> None:
        """Raise :class:`ConfigError` unless ``name`` is registered; imports nothing."""
        if name not in self._items:
            raise ConfigError(self.unknown(name, what))

    def unknown(self, name: object, what: str | None = None) -> str:
        """The message for a name this registry does not know."""
        label = what or self.kind.rstrip("s")
        return (
            f"unknown {label} {name!r}{did_you_mean(str(name), self._items)}; valid: {', '.join(sorted(self._items))}"
        )

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern``, sorted."""
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)
