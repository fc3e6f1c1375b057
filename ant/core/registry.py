"""Name -> factory registries, one per component kind, filled through the plugin hooks."""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ant.core.errors import AntError


@dataclass(frozen=True)
class Lazy:
    """A factory named by module and attribute: imported on first call, then called with
    ``options`` and the call's keyword arguments.

    Registries hold these so that listing components (``ant plugins``) or starting any command
    imports no component module, and so no torch, timm or torch-fidelity.
    """

    module: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def target(self) -> Any:
        """The named callable (importing its module)."""
        return getattr(importlib.import_module(self.module), self.name)

    def __call__(self, **kwargs: Any) -> Any:
        return self.target()(**{**self.options, **kwargs})

    def doc(self) -> str:
        """The target's docstring, cleaned, read from its module's source without importing it
        (imported only when the source does not define the target itself)."""
        spec = importlib.util.find_spec(self.module)
        if spec is not None and spec.origin is not None and spec.origin.endswith(".py"):
            with open(spec.origin, encoding="utf-8") as handle:
                tree = ast.parse(handle.read())
            for node in tree.body:
                if isinstance(node, ast.ClassDef | ast.FunctionDef) and node.name == self.name:
                    return ast.get_docstring(node) or ""
        return inspect.getdoc(self.target()) or ""

    def doc_line(self) -> str:
        """The first line of :meth:`doc`."""
        doc = self.doc().strip()
        return doc.splitlines()[0] if doc else ""


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) for ``package``: each name in ``exports`` is imported
    from its module (``exports[name]``, relative to the package) on first access, so importing
    the package itself stays cheap. A name may not be that of a sub-module: importing the
    sub-module would replace it."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__


def resolve(factory: Callable[..., Any]) -> Any:
    """The callable behind ``factory``: a :class:`Lazy`'s target, imported; else ``factory``."""
    return factory.target() if isinstance(factory, Lazy) else factory


@dataclass(frozen=True)
class Entry:
    """One registered component: built lazily by calling :attr:`factory`."""

    kind: str
    name: str
    factory: Callable[..., Any]
    description: str
    plugin: str
    distribution: str

    def build(self, **options: Any) -> Any:
        """Build the component with the given options."""
        return self.factory(**options)

    def parameters(self) -> dict[str, inspect.Parameter]:
        """The keyword options the factory accepts (empty if it takes ``**kwargs`` only)."""
        try:
            sig = inspect.signature(resolve(self.factory))
        except (TypeError, ValueError):
            return {}
        return {
            name: p
            for name, p in sig.parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }

    def accepts_any_option(self) -> bool:
        """Whether the factory takes ``**kwargs``."""
        try:
            sig = inspect.signature(resolve(self.factory))
        except (TypeError, ValueError):
            return True
        return any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def first_doc_line(obj: object) -> str:
    """The first line of an object's docstring, or an empty string."""
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def describe(factory: Callable[..., Any]) -> str:
    """The first docstring line of a factory, without importing a :class:`Lazy` one."""
    return factory.doc_line() if isinstance(factory, Lazy) else first_doc_line(factory)


def closest(name: str, candidates: list[str]) -> str | None:
    """The candidate most similar to ``name`` (case-insensitive), if any is close enough."""
    lowered = {c.lower(): c for c in candidates}
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[match[0]] if match else None


def unknown_name_message(what: str, name: str, available: list[str]) -> str:
    """One line: the unknown name, the closest match and every available name."""
    guess = closest(name, available)
    hint = f"did you mean '{guess}'? " if guess else ""
    listed = ", ".join(sorted(available)) if available else "none installed"
    return f"unknown {what} '{name}': {hint}available: {listed}"


class Registry:
    """The components of one kind, keyed by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(
        self,
        name: str,
        factory: Callable[..., Any],
        description: str | None,
        *,
        plugin: str,
        distribution: str,
    ) -> None:
        """Add a component; a name registered by two plugins is an error naming both."""
        if not isinstance(name, str) or not name:
            raise AntError(
                f"plugin {plugin} registered a {self.kind} with an empty or non-string name"
            )
        if not callable(factory):
            raise AntError(
                f"plugin {plugin} registered {self.kind} '{name}' with a non-callable factory"
            )
        if name in self._entries:
            first = self._entries[name]
            raise AntError(
                f"{self.kind} '{name}' is registered twice: by {first.distribution} "
                f"(plugin {first.plugin}) and by {distribution} (plugin {plugin}); "
                "uninstall one of them or set ANT_DISABLE_PLUGIN_AUTOLOAD=1"
            )
        self._entries[name] = Entry(
            kind=self.kind,
            name=name,
            factory=factory,
            description=description if description is not None else describe(factory),
            plugin=plugin,
            distribution=distribution,
        )

    def get(self, name: str) -> Entry:
        """The entry for ``name``; an unknown name raises a one-line :class:`AntError`."""
        try:
            return self._entries[name]
        except KeyError:
            raise AntError(unknown_name_message(self.kind, name, self.names())) from None

    def build(self, name: str, **options: Any) -> Any:
        """Build the component ``name`` with ``options``."""
        return self.get(name).build(**options)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)
