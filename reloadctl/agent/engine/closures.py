"""Live closures created before a reload: the one place the engine walks the heap.

Rules:
1. Called only when a reload changed the code of a nested (non-comprehension) function;
   every changed nested code object of the reload is looked up in ONE
   ``gc.get_referrers`` call. Reloads without such code never touch ``gc``.
2. A live function whose code is an old nested code object gets the new code when its free
   variables are the same; otherwise it keeps the old code and a warning says so.
"""

from __future__ import annotations

import gc
from types import CodeType, FunctionType

from reloadctl.agent.engine.context import Context
from reloadctl.results import Action


def patch_live_closures(ctx: Context) -> None:
    """Apply rule 2 to every live closure of ``ctx.closures`` (rule 1)."""
    if not ctx.closures:
        return
    work: dict[int, tuple[CodeType, CodeType, str]] = {}
    for old, new, label in ctx.closures:
        work.setdefault(id(old), (old, new, label))
    patched: dict[str, int] = {}
    kept: dict[str, int] = {}
    for obj in gc.get_referrers(*(old for old, _, _ in work.values())):
        if type(obj) is not FunctionType:
            continue
        entry = work.get(id(obj.__code__))
        if entry is None:
            continue
        old, new, label = entry
        if old.co_freevars != new.co_freevars:
            kept[label] = kept.get(label, 0) + 1
            continue
        ctx.undo.function(obj, label)
        obj.__code__ = new
        patched[label] = patched.get(label, 0) + 1
    for label, count in patched.items():
        ctx.actions.append(_action("patched", label, f"{count} live closure(s)"))
    for label, count in kept.items():
        ctx.warn(
            f"{count} closure(s) of {label} created before reload keep the old code: "
            "their free variables changed"
        )


def _action(kind: str, label: str, detail: str) -> Action:
    return Action(kind, label, detail)
