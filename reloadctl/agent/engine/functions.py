"""Patching functions in place: code, defaults, annotations, wrapper chains, caches, cells.

Rules:
1. A function is patched in place only when its free variables are the same as the new
   one's (``__code__`` must fit the closure it already has); otherwise it is replaced and a
   warning names it.
2. ``__wrapped__`` chains (``functools.wraps`` decorators, ``lru_cache``) are followed: the
   wrapped function inside the *old* wrapper is patched, so whoever holds the wrapper runs
   the new body through the old decoration.
3. A closure cell of a new function that holds a new object standing for an old one is
   pointed at the old one (``__class__`` cells for zero-arg ``super()``, dataclass ``cls``).
4. Nested function code that changed is recorded for the live-closure pass (one heap walk
   for the whole reload, done only when such code exists).
5. A function patched in place also takes the new function's closure state (each old cell
   gets the new cell's contents, new objects mapped to the old ones kept): a decorated
   function then behaves exactly like the freshly decorated one (``singledispatch``
   registries, decorator arguments). Live closures of nested functions (rule 4) keep their
   own state; only their code changes.
6. The new object a kept module-level function stood for is remembered (weakly): where the
   new body's side effects kept it alive (``register(f)`` appending to another module's
   list), later reloads patch it along with the kept function, so every entry runs the
   newest code.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from types import FunctionType

from reloadctl.agent.engine.context import Context, hasattr_safe, is_translatable
from reloadctl.agent.engine.source import function_codes
from reloadctl.agent.engine.undo import FUNCTION_ATTRS, replace_contents

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

    Adopt = Callable[..., Any]


#: Bound on functions visited through closures in one reload (cells can form big graphs).
_MAX_REPOINT: Final = 100_000


def same(a: Any, b: Any) -> bool:
    """Equality that never raises (``==`` of arbitrary defaults may)."""
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - arbitrary __eq__ (arrays, broken objects)
        return False


def _differs(old: FunctionType, new: FunctionType) -> bool:
    for name in FUNCTION_ATTRS:
        if hasattr(new, name) and not same(getattr(old, name, None), getattr(new, name)):
            return True
    old_dict = {k: v for k, v in old.__dict__.items() if k != "__wrapped__"}
    new_dict = {k: v for k, v in new.__dict__.items() if k != "__wrapped__"}
    return not same(old_dict, new_dict)


def adopt_function(ctx: Context, old: FunctionType, new: FunctionType, adopt: Adopt) -> Any:
    """Patch ``old`` to run ``new``'s code and return it, or return ``new`` (rule 1)."""
    qualname = new.__qualname__
    if old.__code__.co_freevars != new.__code__.co_freevars:
        ctx.choose(new, new)
        repoint_cells(ctx, new)
        ctx.functions.append(new)
        ctx.act("replaced", qualname, "free variables changed")
        ctx.warn(
            f"{ctx.label(qualname)} was replaced, not patched: its free variables changed "
            f"({', '.join(old.__code__.co_freevars) or 'none'} -> "
            f"{', '.join(new.__code__.co_freevars) or 'none'}); references held from "
            "before keep the old code"
        )
        return new
    ctx.choose(new, old)
    changed = _differs(old, new)
    old_wrapped = old.__dict__.get("__wrapped__")
    new_wrapped = new.__dict__.get("__wrapped__")
    if new_wrapped is not None and old_wrapped is not None:
        _adopt_wrapped(ctx, old, old_wrapped, new_wrapped, adopt)
    if old.__code__ != new.__code__:
        _collect_closures(ctx, old, new)
    ctx.undo.function(old, ctx.label(qualname))
    for name in FUNCTION_ATTRS:
        if hasattr(new, name):
            setattr(old, name, getattr(new, name))
    fresh = {
        key: (ctx.resolved(value) if key == "__wrapped__" else value)
        for key, value in new.__dict__.items()
    }
    replace_contents(old.__dict__, fresh)
    _adopt_cells(ctx, old, new)
    _sync_aliases(ctx, old, new)
    ctx.functions.append(old)
    if changed:
        ctx.act("patched", qualname)
    return old


#: Function -> its family (rule 6): the kept function and the new objects of earlier
#: reloads it stood for, which live on only where the new body's side effects put them (a
#: registry in another module), one shared weak set per family.
_ALIASES: Final[weakref.WeakKeyDictionary[FunctionType, weakref.WeakSet[FunctionType]]] = (
    weakref.WeakKeyDictionary()
)


def _sync_aliases(ctx: Context, old: FunctionType, new: FunctionType) -> None:
    """Rule 6: the other objects of ``old``'s family (earlier new objects it stood for, or
    that stood for it) get ``old``'s new state too; ``new`` joins the family."""
    family = _ALIASES.get(old)
    for alias in list(family or ()):
        if alias is new or alias is old or alias.__code__.co_freevars != old.__code__.co_freevars:
            continue
        ctx.undo.function(alias, ctx.label(old.__qualname__))
        for name in FUNCTION_ATTRS:
            if hasattr(old, name):
                setattr(alias, name, getattr(old, name))
        replace_contents(alias.__dict__, dict(old.__dict__))
        for alias_cell, old_cell in zip(
            alias.__closure__ or (), old.__closure__ or (), strict=True
        ):
            try:
                value = old_cell.cell_contents
            except ValueError:
                continue
            ctx.undo.cell(alias_cell)
            alias_cell.cell_contents = value
    if "." in new.__qualname__:
        # methods and nested functions live and die with their (cyclic) class or closure:
        # remembering them would keep patching garbage until the collector runs; what a
        # decorator registers elsewhere is a module-level function
        return
    if family is None:
        family = _ALIASES[old] = weakref.WeakSet([old])
    family.add(new)
    _ALIASES[new] = family


def _adopt_wrapped(
    ctx: Context, wrapper: FunctionType, old_inner: Any, new_inner: Any, adopt: Adopt
) -> None:
    """Patch the function inside an old wrapper; re-point the wrapper if it was replaced."""
    chosen = adopt_inner(ctx, old_inner, new_inner, adopt)
    if chosen is not old_inner:
        # the wrapper still calls the old inner object through its closure: re-point it
        for cell in wrapper.__closure__ or ():
            try:
                held = cell.cell_contents
            except ValueError:
                continue
            if held is old_inner:
                ctx.undo.cell(cell)
                cell.cell_contents = chosen


def _adopt_cells(ctx: Context, old: FunctionType, new: FunctionType) -> None:
    """Rule 5: the old function's cells take the new function's cell contents."""
    # same free variables (rule 1), so the cells pair up one to one
    for old_cell, new_cell in zip(old.__closure__ or (), new.__closure__ or (), strict=True):
        try:
            value = ctx.resolved(new_cell.cell_contents)
        except ValueError:
            continue  # an empty cell (a name not yet assigned in the new scope)
        try:
            if old_cell.cell_contents is value:
                continue
        except ValueError:
            pass
        ctx.undo.cell(old_cell)
        old_cell.cell_contents = value
        if isinstance(value, FunctionType):
            repoint_cells(ctx, value)
        elif is_translatable(value):
            # a decorator's state made by the new body (``singledispatch``'s registry keyed
            # by the module's classes) must name the kept objects
            ctx.containers.append(value)


def adopt_inner(ctx: Context, old: Any, new: Any, adopt: Adopt) -> Any:
    """Pair the objects at the same place inside an old and a new wrapper (rule 2). They are
    paired by position, never by qualname: ``functools.wraps`` gives the wrapper the same
    qualname as what it wraps, so a lookup by name would find the wrapper itself."""
    if id(new) in ctx.memo:
        chosen: Any = ctx.memo[id(new)]
        return chosen
    if isinstance(old, FunctionType) and isinstance(new, FunctionType):
        return adopt_function(ctx, old, new, adopt)
    if isinstance(new, (classmethod, staticmethod)) and type(old) is type(new):
        if adopt_inner(ctx, old.__func__, new.__func__, adopt) is old.__func__:
            return ctx.choose(new, old)
        return ctx.choose(new, new)
    if ctx.resolved(type(new)) is type(old) and hasattr_safe(new, "__wrapped__"):
        return adopt_wrapper(ctx, old, new, adopt)
    if old is new:
        return old
    return ctx.choose(new, new)


def adopt_wrapper(ctx: Context, old: Any, new: Any, adopt: Adopt) -> Any:
    """Keep an old non-function wrapper (``lru_cache``...) when its inner function can be
    patched in place and its configuration is unchanged; clear its cache. Else replace it."""
    qualname = str(getattr(new, "__qualname__", "?"))
    reason = ""
    params = getattr(new, "cache_parameters", None)
    old_params = getattr(old, "cache_parameters", None)
    if callable(params) and callable(old_params) and not same(params(), old_params()):
        reason = "its cache parameters changed"
    if not reason:
        inner_old = old.__wrapped__
        chosen = adopt_inner(ctx, inner_old, new.__wrapped__, adopt)
        if chosen is not inner_old:
            reason = "the function it wraps could not be patched in place"
    if reason:
        ctx.choose(new, new)
        ctx.act("replaced", qualname, reason)
        ctx.warn(
            f"{ctx.label(qualname)} was replaced, not patched: {reason}; references held "
            "from before keep the old code"
        )
        return new
    ctx.choose(new, old)
    clear = getattr(old, "cache_clear", None)
    if callable(clear):
        clear()
        ctx.act("cache_cleared", qualname)
    return old


def repoint_cells(ctx: Context, fn: FunctionType) -> None:
    """Rule 3: point ``fn``'s cells that hold a matched new object at the object kept, and
    do the same inside new functions its cells hold (a decorator's closure keeps the raw
    method, whose ``__class__`` cell must name the live class for ``super()``)."""
    todo = [fn]
    while todo:
        current = todo.pop()
        if id(current) in ctx.repointed or len(ctx.repointed) > _MAX_REPOINT:
            continue
        ctx.repointed.add(id(current))
        ctx.keep.append(current)
        for cell in current.__closure__ or ():
            try:
                held = cell.cell_contents
            except ValueError:
                continue
            chosen = ctx.memo.get(id(held))
            if chosen is not None and chosen is not held:
                ctx.undo.cell(cell)
                cell.cell_contents = chosen
            elif isinstance(held, FunctionType) and ctx.is_new(held):
                todo.append(held)
            elif is_translatable(held):
                # state of a new decorator's inner functions (``singledispatch``'s
                # registry): translated with the module's containers
                ctx.containers.append(held)


def repoint_member(ctx: Context, member: Any) -> None:
    """Apply rule 3 to the functions inside a class member (method, property, wrappers)."""
    for fn in _member_functions(member):
        repoint_cells(ctx, fn)


def _member_functions(member: Any) -> list[FunctionType]:
    found: list[FunctionType] = []
    seen: set[int] = set()
    todo = [member]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or len(seen) > 32:
            continue
        seen.add(id(obj))
        if isinstance(obj, FunctionType):
            found.append(obj)
            obj = obj.__dict__.get("__wrapped__")
            if obj is not None:
                todo.append(obj)
            continue
        for name in ("__func__", "fget", "fset", "fdel", "func", "__wrapped__"):
            try:
                inner = getattr(obj, name, None)
            except Exception:  # noqa: BLE001 - a hostile descriptor: nothing to follow
                inner = None
            if inner is not None:
                todo.append(inner)
    return found


def _collect_closures(ctx: Context, old: FunctionType, new: FunctionType) -> None:
    """Rule 4: remember changed nested function code of ``old`` for the closure pass."""
    if not any(isinstance(c, type(old.__code__)) for c in old.__code__.co_consts):
        return
    new_codes = function_codes(new.__code__)
    for path, old_code in function_codes(old.__code__).items():
        new_code = new_codes.get(path)
        if new_code is not None and new_code != old_code:
            qual = getattr(new_code, "co_qualname", None) or (
                f"{new.__qualname__}.<locals>.{new_code.co_name}"
            )
            ctx.closures.append((old_code, new_code, ctx.label(qual)))
