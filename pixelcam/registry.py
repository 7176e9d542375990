"""One small registry type for every choice the project offers (timm's ``register_model`` /
``list_models`` pattern): map methods, image heads, pixel heads, training phases, dataset
readers, seed samplers and devices each have one :class:`Registry`; the CLI's choices,
``TrainConfig`` validation and the napari docks' lists are read from them, never written
out again.

An entry is registered where it is implemented, with a decorator::

    @IMAGE_HEADS.register("gap")
    class GAPHead(ImageHead): ...

A registry built with ``package=`` imports every module of that package the first time it
is read, so adding an entry there is one new file. ``aliases`` keep old public codes
working (``"pb"`` for the ``probability`` sampler); :meth:`Registry.canonical` maps them
to the entry's name.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pixelcam.errors import InputError

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    """A registered object with its name, aliases, listing order and a one-line help."""

    name: str
    obj: T
    aliases: tuple[str, ...] = ()
    order: float = 0.0
    help: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` names it in error messages)."""

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self.package = package
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}
        self._discovered = package is None

    def register(
        self,
        name: str,
        *,
        aliases: tuple[str, ...] = (),
        order: float | None = None,
        help: str = "",  # noqa: A002 - argparse's word
        **meta: Any,
    ) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name`` (and ``aliases``).

        ``order`` sorts the listing (default: registration order); ``meta`` holds any
        facts views need without building the object (e.g. ``needs_teacher``).
        """

        def decorator(obj: T) -> T:
            rank = float(len(self._entries)) if order is None else float(order)
            self._entries[name] = Entry(name, obj, tuple(aliases), rank, help, dict(meta))
            for alias in aliases:
                self._aliases[alias] = name
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that register a throwaway one clean up with this)."""
        entry = self._entries.pop(name, None)
        for alias in entry.aliases if entry else ():
            self._aliases.pop(alias, None)

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)  # type: ignore[arg-type]
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

    def entries(self) -> list[Entry[T]]:
        """Every entry, in listing order."""
        self._discover()
        return sorted(self._entries.values(), key=lambda e: e.order)

    def names(self) -> list[str]:
        """Registered names in listing order (aliases not included)."""
        return [e.name for e in self.entries()]

    def choices(self) -> list[str]:
        """Names and aliases: everything :meth:`canonical` accepts."""
        return self.names() + sorted(self._aliases)

    def canonical(self, name: str) -> str:
        """The entry name for ``name`` or one of its aliases; :class:`InputError` if unknown."""
        self._discover()
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise InputError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")

    def entry(self, name: str) -> Entry[T]:
        return self._entries[self.canonical(name)]

    def get(self, name: str) -> T:
        """The registered object for ``name`` (or an alias)."""
        return self.entry(name).obj

    def __contains__(self, name: object) -> bool:
        self._discover()
        return isinstance(name, str) and (name in self._entries or name in self._aliases)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


class LazyChoices:
    """An argparse ``choices`` container that reads a registry only when argparse asks
    (parsing or ``--help``), so building the parser imports nothing heavy.

    ``registry``: a :class:`Registry`, or ``"module:attribute"`` naming one (imported on
    first use).
    """

    def __init__(self, registry: Registry[Any] | str) -> None:
        self._registry = registry

    @property
    def registry(self) -> Registry[Any]:
        if isinstance(self._registry, str):
            module, attr = self._registry.split(":")
            self._registry = getattr(importlib.import_module(module), attr)
        return self._registry

    def __contains__(self, value: object) -> bool:
        return value in self.registry

    def __iter__(self) -> Iterator[str]:
        return iter(self.registry.choices())

    def __repr__(self) -> str:  # argparse's error message shows repr of each choice
        return repr(self.registry.choices())
