"""Matching each new definition to the old object of the same qualname and patching it.

Rules:
1. Old and new objects are matched by ``__module__`` + ``__qualname__``, never by the name
   they are bound to alone (an alias ``f = foo`` must not make ``foo`` run ``bar``'s code);
   the old object bound at the same place, when its qualname matches, is preferred (a
   package may have rewritten ``__module__``; a base class made on the fly has no name).
2. A match keeps the old object (patched in place) whenever that is safe; otherwise the new
   object is used, the action is ``replaced`` and a warning says why.
3. Each new object is decided once (``Context.memo``), however many names refer to it,
   and each old object stands for at most one new object.
4. Qualnames containing ``<lambda>`` or ``<locals>``, and qualnames several old objects
   share (``typing._NamedTuple`` and the function ``NamedTuple``), are not unique: such an
   object only matches the old object bound at the same place (module name or member).
5. A plain object the new body binds at top level that holds functions of the module as
   attributes (click commands, task objects) has them matched against the attributes of
   the object the name held before, so the object held from before runs the new code.
6. When a definition changes kind because a decorator was added or removed, the function
   inside the old object is still patched from the function inside the new one.
"""

from __future__ import annotations

from types import FunctionType

from reloadctl.agent.engine.classes import adopt_class, fix_new_class
from reloadctl.agent.engine.context import AMBIGUOUS, Context, hasattr_safe
from reloadctl.agent.engine.functions import adopt_function, adopt_wrapper, repoint_cells

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final


def adopt(ctx: Context, new: Any, hint: Any = None) -> Any:
    """Return the object that should stand for ``new`` (see the module rules).

    ``hint`` is the old object bound where ``new`` is bound now (same module name or class
    member), the only acceptable match for a qualname that is not unique (rule 4).
    """
    if id(new) in ctx.memo:
        return ctx.memo[id(new)]
    if not ctx.is_new(new):
        return new
    qualname = getattr(new, "__qualname__", None)
    module = getattr(new, "__module__", None)
    old = None
    if isinstance(qualname, str) and (module == ctx.module or ctx.made_here(new)):
        if (
            hint is not None
            and getattr(hint, "__qualname__", None) == qualname
            and getattr(hint, "__module__", None) == module
        ):
            old = hint  # the object bound at the same place: the best evidence there is
        else:
            old = ctx.old.get(qualname)
            if "<" in qualname or old is AMBIGUOUS:
                old = None
    if old is not None and id(old) in ctx.claimed:
        old = None  # already stands for another new object (rule 3)
    if old is None or old is new:
        ctx.choose(new, new)
        return _fix_new(ctx, new)
    if isinstance(new, FunctionType) and isinstance(old, FunctionType):
        if not _decoration_changed(old, new):
            return adopt_function(ctx, old, new, adopt)
        _adopt_across_kinds(ctx, old, new)
        ctx.choose(new, new)
        ctx.act("replaced", str(qualname), "decorated differently")
        ctx.warn(
            f"{ctx.label(str(qualname))} was replaced, not patched: it is decorated "
            "differently (free variables changed); references held from before run the new "
            "body without the new decoration"
        )
        return _fix_new(ctx, new)
    if isinstance(new, type) and isinstance(old, type):
        return adopt_class(ctx, old, new, adopt)
    if (
        not isinstance(new, (FunctionType, type))
        and ctx.resolved(type(new)) is type(old)  # the wrapper class may be reloaded too
        and hasattr_safe(new, "__wrapped__")
        and hasattr_safe(old, "__wrapped__")
    ):
        return adopt_wrapper(ctx, old, new, adopt)
    _adopt_across_kinds(ctx, old, new)
    ctx.choose(new, new)
    ctx.act("replaced", str(qualname), f"was {type(old).__name__}, now {type(new).__name__}")
    ctx.warn(
        f"{ctx.label(str(qualname))} changed kind ({type(old).__name__} -> "
        f"{type(new).__name__}): references held from before keep the old object"
    )
    return _fix_new(ctx, new)


#: Bound on the attributes of one object looked at by ``adopt_attributes``.
_MAX_ATTRIBUTES: Final = 64


def adopt_attributes(ctx: Context, new: Any, old: Any) -> dict[str, Any] | None:
    """Rule 5: patch the old functions an object made by the new body holds as attributes.

    ``new`` is a plain object bound at top level (``hello = Command(hello)``, ``app =
    App()``), ``old`` what that name held before. Each function of this module in
    ``new.__dict__`` is matched to the function under the same attribute of ``old`` (or by
    qualname) and patched in place, and ``new`` then holds the kept function. Returns
    ``new.__dict__`` (for the caller to translate what it holds), or None when ``new`` has
    no plain instance dict.
    """
    try:
        attrs = object.__getattribute__(new, "__dict__")
    except Exception:  # noqa: BLE001 - no instance dict, or a property that raises
        return None
    if type(attrs) is not dict or issubclass(type(new), type) or len(attrs) > _MAX_ATTRIBUTES:
        return None
    try:
        old_attrs = object.__getattribute__(old, "__dict__") if old is not None else {}
    except Exception:  # noqa: BLE001 - same
        old_attrs = {}
    if type(old_attrs) is not dict:
        old_attrs = {}
    for key, value in list(attrs.items()):
        if isinstance(value, FunctionType) and ctx.made_here(value):
            chosen = adopt(ctx, value, old_attrs.get(key))
            if chosen is not value:
                attrs[key] = chosen
    return attrs


def _decoration_changed(old: FunctionType, new: FunctionType) -> bool:
    """A ``functools.wraps`` wrapper on one side only, and code that cannot be swapped."""
    wrapped_old = "__wrapped__" in old.__dict__
    wrapped_new = "__wrapped__" in new.__dict__
    return wrapped_old != wrapped_new and old.__code__.co_freevars != new.__code__.co_freevars


def _innermost(obj: Any) -> FunctionType | None:
    """The function at the bottom of ``obj``'s ``__wrapped__`` chain (``obj`` itself when
    it is a function wrapping nothing); None when there is no function there."""
    for _ in range(8):
        try:
            attrs = object.__getattribute__(obj, "__dict__")
        except AttributeError:
            attrs = {}
        wrapped = attrs.get("__wrapped__") if isinstance(attrs, dict) else None
        if wrapped is None:
            return obj if isinstance(obj, FunctionType) else None
        obj = wrapped
    return None


def _adopt_across_kinds(ctx: Context, old: Any, new: Any) -> None:
    """Rule 6: a decorator was added or removed (``f`` became ``lru_cache(f)`` or back):
    the function inside the old object takes the new function's code, so references held
    from before run the newest body; an old cache is cleared."""
    inner_old, inner_new = _innermost(old), _innermost(new)
    if not (isinstance(inner_old, FunctionType) and isinstance(inner_new, FunctionType)):
        return
    if inner_old.__qualname__ != inner_new.__qualname__ or not ctx.is_new(inner_new):
        return
    if id(inner_new) in ctx.memo or id(inner_old) in ctx.claimed:
        return
    adopt_function(ctx, inner_old, inner_new, adopt)
    clear = getattr(old, "cache_clear", None)
    if callable(clear):
        clear()
        ctx.act("cache_cleared", str(getattr(old, "__qualname__", "?")))


def _fix_new(ctx: Context, new: Any) -> Any:
    """A definition that stays new: point its cells (or its bases and its methods' cells)
    at the objects kept, so a class added by the reload derives from the live classes.
    Returns the object standing for it (a class may have to be rebuilt on the live bases)."""
    if isinstance(new, FunctionType):
        repoint_cells(ctx, new)
        ctx.functions.append(new)
    elif isinstance(new, type):
        return fix_new_class(ctx, new, adopt)
    return new
