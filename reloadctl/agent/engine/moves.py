"""Definitions moved between modules of one batch (a package upgrade that moves ``helper``
from ``pkg.util`` to a new ``pkg.helpers``): what was held from before follows the move.

Rules:
1. An old definition of a reloaded module that the new version no longer keeps, and whose
   qualname is defined by exactly one other module of the same top-level package in the
   batch (or one the batch imported for the first time), has moved there, provided its
   name in the old module is gone or now holds that very object (``from .helpers import
   helper``). A name holding a replacement of its own (a class whose layout changed) is
   not a move.
2. A moved class keeps its identity: the new class is poured into the old one (which takes
   the new module as ``__module__``) and every module of the batch binding the new class
   is rebound to the old one, so held instances and the new module share one class.
3. A moved function cannot move its globals (``__globals__`` is read-only), so the old
   function forwards every call to the new one (its ``__wrapped__`` names the target).
4. Everything is recorded in the old module's undo log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import FunctionType, ModuleType

from reloadctl.agent.engine.adopt import adopt
from reloadctl.agent.engine.context import Context, is_definition
from reloadctl.agent.engine.undo import UndoLog
from reloadctl.results import Action

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final


@dataclass(frozen=True, slots=True)
class Moved:
    """One reloaded module of the batch, as ``follow_moves`` needs it."""

    name: str
    snapshot: dict[str, Any]
    undo: UndoLog


_GONE: Final = object()


def _forward(*args: Any, __reloadctl_moved_to__: Any = None, **kwargs: Any) -> Any:
    return __reloadctl_moved_to__(*args, **kwargs)


def follow_moves(
    applied: Sequence[Moved], first_loaded: Sequence[str]
) -> tuple[dict[str, list[Action]], dict[str, list[str]]]:
    """Apply rules 1-4; return actions and warnings per reloaded module."""
    import sys

    sources: dict[str, dict[str, Any]] = {}
    for name in [m.name for m in applied] + list(first_loaded):
        module = sys.modules.get(name)
        if isinstance(module, ModuleType):
            sources[name] = vars(module)
    fresh: dict[str, dict[int, tuple[str, Any]]] = {}
    olds = {m.name: {id(v) for v in m.snapshot.values()} for m in applied}
    for name, ns in sources.items():
        for value in list(ns.values()):
            if is_definition(value, name) and id(value) not in olds.get(name, ()):
                fresh.setdefault(value.__qualname__, {})[id(value)] = (name, value)
    actions: dict[str, list[Action]] = {}
    warnings: dict[str, list[str]] = {}
    for m in applied:
        module_ns = sources.get(m.name)
        if module_ns is None:
            continue
        live = {id(v) for v in module_ns.values()}
        for key, old in list(m.snapshot.items()):
            if id(old) in live or not is_definition(old, m.name):
                continue
            package = m.name.partition(".")[0]
            found = [
                c
                for c in fresh.get(old.__qualname__, {}).values()
                if c[0] != m.name and c[0].partition(".")[0] == package
            ]
            if len(found) != 1:
                continue
            target, new = found[0]
            now = module_ns.get(key, _GONE)
            if now is not _GONE and now is not new:
                continue  # rule 1: the name still holds something of its own (a replacement)
            label = f"{m.name}.{old.__qualname__}"
            where = f"{target}.{new.__qualname__}"
            if isinstance(old, FunctionType) and isinstance(new, FunctionType):
                if old.__code__.co_freevars:
                    warnings.setdefault(m.name, []).append(
                        f"{label} moved to {where}; references held from before keep the old "
                        "code (it is a closure)"
                    )
                    continue
                m.undo.function(old, label)
                old.__code__ = _forward.__code__
                old.__defaults__ = None
                old.__kwdefaults__ = {"__reloadctl_moved_to__": new}
                old.__doc__ = new.__doc__
                old.__dict__["__wrapped__"] = new
                actions.setdefault(m.name, []).append(
                    Action("patched", label, f"moved to {where}; calls are forwarded")
                )
            elif isinstance(old, type) and isinstance(new, type):
                ctx = Context(target, {new.__qualname__: old}, m.undo)
                chosen = adopt(ctx, new)
                if chosen is not old:
                    warnings.setdefault(m.name, []).extend(ctx.warnings)
                    continue
                ctx.translate_containers()
                for ns_name, other in sources.items():
                    for other_key, value in list(other.items()):
                        if value is new:
                            m.undo.setitem(other, other_key, f"{ns_name}.{other_key}")
                            other[other_key] = old
                actions.setdefault(m.name, []).append(
                    Action("patched", label, f"moved to {where}; the class keeps its identity")
                )
    return actions, warnings
