"""``dependents=True``: rebind ``from m import NAME`` copies held by other loaded modules.

Rules:
1. Only module dicts are looked at (``sys.modules``), never the heap.
2. A dependent's name is rebound when it still holds the object the reloaded module bound
   before and the reloaded module now binds another object to that name.
3. Interned or shared values (small ints, strings, None, tuples...) are only matched under
   the same name, so an unrelated ``DEBUG = 1`` elsewhere is never touched.
4. Every rebinding is recorded in the reloaded module's undo log.
5. Within one batch this always happens between the batch's own modules (a fresh import
   of a package with an import cycle binds the new values everywhere); ``dependents=True``
   extends it to every loaded module.
6. Aliases (``from m import f as g``) are followed: the binding is found by the object it
   holds, whatever its name (rule 3 aside).
7. With ``dependents=True``, a module that did ``from m import *`` (it holds every name m
   exported before, and its code says so) receives the names m exports now that it lacks,
   as IPython's ``%autoreload 3`` does.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from types import ModuleType

from reloadctl.agent.engine.undo import UndoLog
from reloadctl.results import Action

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

_SHARED_TYPES: Final = (int, float, complex, str, bytes, bool, type(None), tuple, frozenset)


def rebind_dependents(
    changed: Iterable[tuple[str, dict[str, Any], dict[str, Any], UndoLog]],
    *,
    only: frozenset[str] | None = None,
) -> dict[str, list[Action]]:
    """Apply rules 1-4 for each ``(module, snapshot, namespace, undo)`` applied; with
    ``only``, look at those modules alone (the batch itself, see rule 5).

    Returns the ``rebound`` actions per reloaded module.
    """
    index: dict[int, list[tuple[str, str, Any, UndoLog]]] = {}
    for module, snapshot, ns, undo in changed:
        for attr, old in snapshot.items():
            if attr.startswith("__") and attr.endswith("__"):
                continue
            new = ns.get(attr, snapshot)
            if new is snapshot or new is old:
                continue
            index.setdefault(id(old), []).append((module, attr, old, undo))
    actions: dict[str, list[Action]] = {}
    if not index:
        return actions
    # sys.modules may hold any object, whatever its annotation says
    loaded: list[tuple[str, object]] = list(sys.modules.items())
    if only is not None:
        loaded = [(name, module) for name, module in loaded if name in only]
    for dep_name, dep in loaded:
        # modules of the batch count too: in an import cycle one of them ran before the
        # other and may hold its old values
        if not isinstance(dep, ModuleType):
            continue
        if dep_name == "reloadctl" or dep_name.startswith("reloadctl."):
            continue
        try:
            dep_ns = vars(dep)
        except TypeError:
            continue
        for key, value in list(dep_ns.items()):
            entries = index.get(id(value))
            if not entries:
                continue
            for module, attr, old, undo in entries:
                if old is not value or module == dep_name:
                    continue
                if key != attr and isinstance(value, _SHARED_TYPES):
                    continue
                source_ns = vars(sys.modules[module])
                undo.setitem(dep_ns, key, f"{dep_name}.{key}")
                dep_ns[key] = source_ns[attr]
                actions.setdefault(module, []).append(Action("rebound", f"{dep_name}.{key}"))
                break
    return actions


def add_star_exports(
    changed: Iterable[tuple[str, dict[str, Any], dict[str, Any], UndoLog]],
) -> dict[str, list[Action]]:
    """Rule 7 for each ``(module, snapshot, namespace, undo)`` applied; returns the
    ``rebound`` actions per reloaded module."""
    actions: dict[str, list[Action]] = {}
    for module, snapshot, ns, undo in changed:
        before, now = _exports(snapshot), _exports(ns)
        if before is None or now is None or not before or not (now - before):
            continue
        first = min(before)
        held = snapshot.get(first)
        for dep_name, dep in list(sys.modules.items()):
            if dep_name == module or not isinstance(dep, ModuleType):
                continue
            try:
                dep_ns = vars(dep)
            except TypeError:
                continue
            if dep_ns.get(first, snapshot) is not held:
                continue  # cheap rejection: most modules do not hold m's first export
            if any(dep_ns.get(k, snapshot) is not snapshot.get(k) for k in before):
                continue
            if not _star_imports(dep, dep_name, module):
                continue
            for key in sorted(now - before):
                if key in dep_ns or key not in ns:
                    continue
                undo.setitem(dep_ns, key, f"{dep_name}.{key}")
                dep_ns[key] = ns[key]
                actions.setdefault(module, []).append(Action("rebound", f"{dep_name}.{key}"))
    return actions


def _exports(ns: dict[str, Any]) -> set[str] | None:
    """What ``from m import *`` binds from a namespace (``__all__``, else public names)."""
    public = ns.get("__all__")
    if public is None:
        return {k for k in ns if not k.startswith("_")}
    try:
        return {k for k in public if isinstance(k, str) and k in ns}
    except Exception:  # noqa: BLE001 - a hostile __all__: cannot tell
        return None


def _star_imports(dep: ModuleType, dep_name: str, module: str) -> bool:
    """True when ``dep``'s code does ``from module import *`` (its loader's code: the
    bytecode cache, or its source compiled; only candidates get here)."""
    from reloadctl.agent.engine.source import analyse

    try:
        spec = dep.__spec__
        if spec is None:
            return False
        get_code = getattr(spec.loader, "get_code", None)
        code = get_code(dep_name) if callable(get_code) else None
        if code is None:
            return False
        package = dep_name if spec.submodule_search_locations is not None else spec.parent
        stars = analyse(code, package or "").star_from
    except Exception:  # noqa: BLE001 - no readable code: not proven, nothing added
        return False
    return stars is not None and module in stars
