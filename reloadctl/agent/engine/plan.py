"""Static planning: what a reload would change (dry run), and whether a module the engine
never ran is provably unchanged, both without executing anything."""

from __future__ import annotations

import sys
from types import CodeType, FunctionType, ModuleType

from reloadctl.agent.engine.context import AMBIGUOUS, is_definition
from reloadctl.agent.engine.namespace import SPECIAL, old_definitions, star_exports
from reloadctl.agent.engine.resolve import Target
from reloadctl.results import Action

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

_CO_OPTIMIZED: Final = 0x1


def definition_codes(code: CodeType, prefix: str = "") -> dict[str, tuple[CodeType, bool]]:
    """Map the qualname of each function and class body in a module's code to
    ``(code, is_function)``; functions are not descended into (their nested code is part
    of their own code's equality), class bodies are."""
    found: dict[str, tuple[CodeType, bool]] = {}
    for const in code.co_consts:
        if not isinstance(const, CodeType) or const.co_name.startswith("<"):
            continue
        qualname = prefix + const.co_name
        is_function = bool(const.co_flags & _CO_OPTIMIZED)
        found.setdefault(qualname, (const, is_function))
        if not is_function:
            found.update(
                (k, v) for k, v in definition_codes(const, qualname + ".").items() if k not in found
            )
    return found


def _live_function(obj: Any) -> FunctionType | None:
    """The function whose code ``obj`` runs, looking through wrappers and descriptors."""
    for _ in range(16):
        if isinstance(obj, FunctionType):
            return obj
        inner = None
        for attr in ("__func__", "__wrapped__", "fget"):
            try:
                inner = getattr(obj, attr, None)
            except Exception:  # noqa: BLE001 - a hostile descriptor: nothing to follow
                inner = None
            if inner is not None:
                break
        if inner is None:
            return None
        obj = inner
    return None


def plan_actions(target: Target, previously_defined: frozenset[str] | None) -> tuple[Action, ...]:
    """What reloading ``target`` would do, as far as it can be told without running it."""
    name = target.name
    ns = vars(target.module)
    stores = target.code.stores - SPECIAL
    actions: list[Action] = [Action("added", f"{name}.{key}") for key in sorted(stores - ns.keys())]
    old = old_definitions(name, dict(ns))
    for qualname, (code, is_function) in sorted(definition_codes(target.code.code).items()):
        live = old.get(qualname)
        if live is AMBIGUOUS:
            continue
        if live is None:
            if "." in qualname:
                actions.append(Action("added", f"{name}.{qualname}"))
            continue
        if not is_function:
            continue
        fn = _live_function(live)
        if fn is None or fn.__code__ == code:
            continue
        kind = "patched" if fn.__code__.co_freevars == code.co_freevars else "replaced"
        actions.append(Action(kind, f"{name}.{qualname}"))
    old_names = previously_defined if previously_defined is not None else frozenset(ns)
    exported = star_exports(target.code.star_from) if target.code.star_import else None
    if exported is not None:
        stores = stores | exported  # what ``import *`` binds, from the source as loaded now
    elif target.code.dynamic:
        old_names = frozenset()  # see namespace._defined: such a body prunes nothing unchanged
    unsure = target.code.star_import and exported is None
    # ``__annotations__`` is made afresh by a body with annotations (no name store shows it)
    for key in sorted(old_names - stores - SPECIAL - {"__annotations__"}):
        value = ns.get(key)
        if isinstance(value, ModuleType) and sys.modules.get(f"{name}.{key}") is value:
            continue
        if key in ns and not (unsure and not is_definition(value, name)):
            actions.append(Action("removed", f"{name}.{key}"))
    return tuple(actions)
