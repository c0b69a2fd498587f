"""``%autoreload 3``: the user namespace's ``from m import ...`` names, followed across reloads.

The engine's ``dependents=True`` rebinds ``from m import x`` copies held by *modules*; the
user namespace of a shell is a plain dict, so this module does the same for it.

Rules:
1. What a cell imported is read from its source after it ran (``track_imports``):
   ``from m import y as z`` records ``m.y -> z``; ``from m import *`` records ``m.* -> *``.
   The latest import of a user name wins: an earlier record that bound the same name (from
   any module) is dropped (``ImportFromTracker.add_import``).
2. Before a reload, ``capture()`` notes what each tracked module binds now under each
   tracked name, and the public names of star-imported modules.
3. After it, ``apply()`` rebinds a user name only while it still holds the object the
   module bound before and the module now binds another object: a value the user assigned
   since is never overwritten.
4. A star-imported module's new public names (``__all__``, else names without a leading
   underscore) are added to the user namespace, unless the user already has that name.
   Names the module no longer binds stay in the user namespace (as after a re-import).
"""

from __future__ import annotations

import ast
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import MutableMapping
    from typing import Any

STAR = "*"
_MISSING = object()


class ImportFromTracker:
    """The user namespace's from-imports (rule 1).

    Attributes:
        imports_froms: module name -> original names imported from it (``"*"`` for a star).
        symbol_map: module name -> original name -> the user names bound to it.
    """

    def __init__(
        self,
        imports_froms: dict[str, list[str]] | None = None,
        symbol_map: dict[str, dict[str, list[str]]] | None = None,
    ) -> None:
        self.imports_froms: dict[str, list[str]] = (
            imports_froms if imports_froms is not None else {}
        )
        self.symbol_map: dict[str, dict[str, list[str]]] = {
            module: {orig: list(names) for orig, names in mapping.items()}
            for module, mapping in (symbol_map or {}).items()
        }

    def add_import(self, module_name: str, original_name: str, resolved_name: str) -> None:
        """Record ``from module_name import original_name as resolved_name`` (rule 1)."""
        if resolved_name != STAR:
            self._unbind(resolved_name)
        originals = self.imports_froms.setdefault(module_name, [])
        if original_name not in originals:
            originals.append(original_name)
        names = self.symbol_map.setdefault(module_name, {}).setdefault(original_name, [])
        if resolved_name not in names:
            names.append(resolved_name)

    def _unbind(self, resolved_name: str) -> None:
        for module_name, mapping in self.symbol_map.items():
            for original, names in list(mapping.items()):
                if resolved_name in names:
                    names.remove(resolved_name)
                    if not names:
                        del mapping[original]
                        originals = self.imports_froms.get(module_name, [])
                        if original in originals:
                            originals.remove(original)

    def clear(self) -> None:
        """Forget every record."""
        self.imports_froms.clear()
        self.symbol_map.clear()


def track_imports(code: str, tracker: ImportFromTracker) -> None:
    """Record the absolute ``from ... import ...`` statements of a cell that ran (rule 1)."""
    if "import" not in code:  # most cells: no parse at all
        return
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return  # IPython syntax that did not reach us transformed; nothing to track
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                tracker.add_import(node.module, alias.name, alias.asname or alias.name)


def public_names(namespace: dict[str, Any]) -> dict[str, Any]:
    """What ``from m import *`` binds from a module namespace (rule 4)."""
    names = namespace.get("__all__")
    if isinstance(names, (list, tuple)):
        return {n: namespace[n] for n in names if isinstance(n, str) and n in namespace}
    return {n: v for n, v in namespace.items() if not n.startswith("_")}


class Snapshot:
    """What tracked modules bound before a reload (rule 2)."""

    def __init__(self, tracker: ImportFromTracker) -> None:
        self._tracker = tracker
        #: (module, original name) -> object bound before
        self.values: dict[tuple[str, str], object] = {}
        #: star-imported module -> its public names before
        self.public: dict[str, dict[str, Any]] = {}
        for module_name, originals in tracker.symbol_map.items():
            module = sys.modules.get(module_name)
            namespace = getattr(module, "__dict__", None)
            if not isinstance(namespace, dict):
                continue
            for original in originals:
                if original == STAR:
                    self.public[module_name] = public_names(namespace)
                else:
                    self.values[module_name, original] = namespace.get(original, _MISSING)

    def apply(self, user_ns: MutableMapping[str, Any]) -> list[str]:
        """Rebind and add user names (rules 3-4); returns the user names changed."""
        changed: list[str] = []
        for (module_name, original), old in self.values.items():
            namespace = getattr(sys.modules.get(module_name), "__dict__", None)
            if not isinstance(namespace, dict):
                continue
            new = namespace.get(original, _MISSING)
            if new is _MISSING or new is old:
                continue
            for name in self._tracker.symbol_map.get(module_name, {}).get(original, ()):
                if user_ns.get(name, _MISSING) is old:
                    user_ns[name] = new
                    changed.append(name)
        for module_name, before in self.public.items():
            namespace = getattr(sys.modules.get(module_name), "__dict__", None)
            if not isinstance(namespace, dict):
                continue
            for name, new in public_names(namespace).items():
                current = user_ns.get(name, _MISSING)
                old = before.get(name, _MISSING)
                if current is new:
                    continue
                if (old is not _MISSING and current is old) or (
                    old is _MISSING and current is _MISSING
                ):
                    user_ns[name] = new
                    changed.append(name)
        return changed
