"""Patching classes in place: members copied onto the old class, or a replacement + warning.

Rules:
1. The old class keeps its identity when its layout is the same: same metaclass, same bases
   (new bases mapped to the old classes they stand for), same ``__slots__`` and instance
   size. Otherwise the new class replaces it and a warning says that instances created
   before the reload keep the old class. ``__class__`` is never assigned across layouts.
   (b) Instances the new body bound that cannot be given the old class (variable-size
   layouts with a ``__dict__``) are replaced by the equal old instance bound under the
   same name; when one has none, the new class replaces the old one.
2. Every member of the new class body goes onto the old class (methods patched in place
   where possible, properties, class/static methods, attributes, nested classes
   recursively); members the new body does not define are deleted from the old class,
   except plain data attributes the old body did not bind either (set at run time by
   others), when the engine knows the old code.
   Generated members (dataclass ``__init__``/``__repr__``/fields, pydantic validators)
   travel the same way, so a re-decorated class is complete on the old object.
3. Per-class state that belongs to the old class object stays (``_abc_impl``, slot
   descriptors, ``__dict__``/``__weakref__`` descriptors).
4. The whole class dict is recorded before the first change, so undo restores it exactly.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import functools
import logging
import operator
import types
from collections.abc import Callable
from types import FunctionType, GetSetDescriptorType, MemberDescriptorType

from reloadctl.agent.engine.context import Context, is_translatable, static_attr
from reloadctl.agent.engine.functions import repoint_member, same
from reloadctl.agent.engine.layouts import instances_stuck, rebuilt

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

    Adopt = Callable[..., Any]

log = logging.getLogger(__name__)


#: Class-dict keys that are never copied, restored or deleted (rule 3).
_NEVER: Final = frozenset({"__dict__", "__weakref__"})
#: Keys whose old value belongs to the old class object and is kept when both have one.
_KEEP_OLD: Final = frozenset({"_abc_impl"})
_MISSING: Final = object()
#: Bound on subclasses visited when abstract methods are recomputed.
_MAX_SUBCLASSES: Final = 10_000


def record_class(ctx: Context, cls: type) -> None:
    """Rule 4: record ``cls``'s dict so undo can restore it exactly."""
    snapshot = {k: v for k, v in cls.__dict__.items() if k not in _NEVER}
    label = ctx.label(cls.__qualname__)

    def undo() -> None:
        for key in [k for k in cls.__dict__ if k not in snapshot and k not in _NEVER]:
            type.__delattr__(cls, key)
        for key, value in snapshot.items():
            if cls.__dict__.get(key, _MISSING) is not value:
                type.__setattr__(cls, key, value)

    ctx.undo.record(undo, label)


def layout_change(ctx: Context, old: type, new: type, adopt: Adopt) -> str:
    """Why ``new`` cannot be poured into ``old`` (rule 1), or ``""`` when it can."""
    if resolve(ctx, type(new), adopt) is not type(old):
        return "metaclass changed"
    if resolve_bases(ctx, new, adopt, old.__bases__) != old.__bases__:
        return "bases changed"
    if _slots(old) != _slots(new):
        return "__slots__ changed"
    if (old.__basicsize__, old.__itemsize__) != (new.__basicsize__, new.__itemsize__):
        return "instance layout changed"
    if not same(old.__dict__.get("_fields"), new.__dict__.get("_fields")):
        return "named tuple fields changed"
    return ""


def resolve(ctx: Context, obj: Any, adopt: Adopt, hint: Any = None) -> Any:
    """The object standing for ``obj``, adopting it first if it is a new definition."""
    if isinstance(obj, type) and ctx.made_here(obj):
        return adopt(ctx, obj, hint)
    return ctx.resolved(obj)


def resolve_bases(
    ctx: Context, new: type, adopt: Adopt, old_bases: tuple[type, ...] = ()
) -> tuple[type, ...]:
    """``new.__bases__`` with every new class replaced by the class standing for it; the
    old class's base at the same position is the preferred match (a base made on the fly,
    like ``class Pair(namedtuple('Pair', ...))``, has no name of its own to match by)."""
    hints = list(old_bases) + [None] * max(0, len(new.__bases__) - len(old_bases))
    return tuple(
        resolve(ctx, base, adopt, hint) for base, hint in zip(new.__bases__, hints, strict=False)
    )


def _slots(cls: type) -> tuple[str, ...] | None:
    slots = cls.__dict__.get("__slots__", None)
    if slots is None:
        return None
    if isinstance(slots, str):
        return (slots,)
    try:
        return tuple(slots)
    except TypeError:
        return (repr(slots),)


def adopt_class(ctx: Context, old: type, new: type, adopt: Adopt) -> type:
    """Pour ``new`` into ``old`` and return ``old``, or return ``new`` with a warning."""
    from reloadctl.agent.engine.enums import adopt_enum, is_enum

    if is_enum(old) or is_enum(new):
        return adopt_enum(ctx, old, new, adopt)
    # decided before looking at members, so self-references inside the body resolve
    ctx.choose(new, old)
    reason = layout_change(ctx, old, new, adopt) or instances_stuck(ctx, old, new)
    if reason:
        return replace_class(ctx, old, new, reason, adopt)
    record_class(ctx, old)
    abstract = old.__dict__.get("__abstractmethods__")
    copy_members(ctx, old, new, adopt, skip=frozenset())
    _refresh_abc(ctx, old, new, adopt, abstract)
    _rebuild_pydantic(ctx, old, new, adopt)
    return old


def replace_class(ctx: Context, old: type, new: type, reason: str, adopt: Adopt) -> type:
    """Let ``new`` take ``old``'s place (rule 1) and report it."""
    qualname = new.__qualname__
    ctx.memo[id(new)] = new
    chosen = fix_new_class(ctx, new, adopt)
    ctx.act("replaced", qualname, reason)
    ctx.warn(f"instances created before reload keep the old class {ctx.label(qualname)}: {reason}")
    return chosen


def fix_new_class(ctx: Context, new: type, adopt: Adopt) -> type:
    """A class that stays new: base it on the live classes and fix its methods' cells.
    Returns the class standing for ``new``: ``new`` itself, or, when its ``__bases__``
    cannot be assigned (a slotted base: the new base's layout is not the kept one's), a
    class made again from its body on the live bases, as a fresh import would make it."""
    bases = resolve_bases(ctx, new, adopt)
    chosen = new
    if bases != new.__bases__:
        try:
            new.__bases__ = bases
        except TypeError:
            chosen = rebuilt(ctx, new, bases)
    for value in list(chosen.__dict__.values()):
        repoint_member(ctx, value)
    return chosen


def copy_members(ctx: Context, old: type, new: type, adopt: Adopt, *, skip: frozenset[str]) -> None:
    """Rule 2: put ``new``'s members on ``old`` and delete those ``new`` does not define."""
    prefix = old.__qualname__
    old_dict = dict(old.__dict__)
    for key, value in list(new.__dict__.items()):
        if key in _NEVER or key in skip or (key in _KEEP_OLD and key in old_dict):
            continue
        if isinstance(value, (MemberDescriptorType, GetSetDescriptorType)) and (
            getattr(value, "__objclass__", None) is new
        ):
            continue  # slot descriptors of the new layout: the old class has its own
        current = old_dict.get(key, _MISSING)
        chosen = _adopt_member(ctx, current, value, adopt)
        if chosen is current:
            continue
        if _shadowed_by_metaclass(old, key):
            ctx.warn(
                f"{ctx.label(prefix)}.{key} was not updated: setting it on the class would "
                f"change the class itself ({type(old).__name__}.{key})"
            )
            continue
        repoint_member(ctx, chosen)
        if is_translatable(chosen):
            ctx.containers.append(chosen)
        elif type(chosen) in (tuple, frozenset):
            ctx.class_immutables.append((old, key))
        elif not _is_code(chosen) and not isinstance(chosen, type):
            ctx.instances.append(chosen)
        type.__setattr__(old, key, chosen)
        _set_name(ctx, chosen, old, key)
        if current is _MISSING:
            ctx.act("added", f"{prefix}.{key}")
        elif isinstance(chosen, (FunctionType, type)) and ctx.memo.get(id(chosen)) is chosen:
            pass  # a definition that could not be kept: adopt() reported it as replaced
        elif _is_code(chosen) or not same(current, chosen):
            ctx.act("patched", f"{prefix}.{key}")
    known = ctx.old_members.get(prefix) if ctx.old_members is not None else None
    for key, value in old_dict.items():
        if key in new.__dict__ or key in _NEVER or key in skip or key in _KEEP_OLD:
            continue
        if known is not None and key not in known and _set_at_run_time(key, value):
            continue
        if _shadowed_by_metaclass(old, key):
            continue
        if isinstance(value, (MemberDescriptorType, GetSetDescriptorType)) and (
            getattr(value, "__objclass__", None) is old
        ):
            continue
        type.__delattr__(old, key)
        ctx.act("removed", f"{prefix}.{key}")


#: Class-dict keys the type machinery stores in the class dict when they are set.
_DICT_BACKED: Final = frozenset(
    {"__doc__", "__module__", "__abstractmethods__", "__annotations__", "__type_params__"}
)


def _shadowed_by_metaclass(cls: type, key: str) -> bool:
    """True when ``setattr(cls, key, ...)`` would hit a data descriptor of the metaclass
    (``__class__``, ``__bases__``, ``__name__``...) instead of the class dict entry."""
    if key in _DICT_BACKED:
        return False
    mro: tuple[type, ...] = getattr(type(cls), "__mro__", (type,))
    for klass in mro:
        attr = klass.__dict__.get(key, _MISSING)
        if attr is not _MISSING:
            return hasattr(type(attr), "__set__")
    return False


def _set_name(ctx: Context, value: Any, owner: type, key: str) -> None:
    """Tell a descriptor copied onto ``owner`` its new owner, as class creation does."""
    hook = getattr(type(value), "__set_name__", None)
    if hook is None or isinstance(value, (FunctionType, type)):
        return
    try:
        hook(value, owner, key)
    except Exception:
        log.debug("__set_name__ of %s.%s failed", ctx.label(owner.__qualname__), key, exc_info=True)


def _set_at_run_time(key: str, value: Any) -> bool:
    """A class attribute the old body did not bind that looks like run-time state (plain
    data, not a dunder, not a method or descriptor a class decorator could have made)."""
    if key.startswith("__") and key.endswith("__"):
        return False
    return not isinstance(value, type) and not hasattr(type(value), "__get__")


def _is_code(value: Any) -> bool:
    return isinstance(value, (FunctionType, classmethod, staticmethod, property))


def _adopt_member(ctx: Context, current: Any, value: Any, adopt: Adopt) -> Any:
    """The object that should sit in the old class for the new member ``value``."""
    if isinstance(value, (classmethod, staticmethod)):  # before __wrapped__: 3.10+ have it
        inner = adopt(ctx, value.__func__, getattr(current, "__func__", None))
        if type(current) is type(value) and current.__func__ is inner:
            return current
        return value
    if isinstance(value, (FunctionType, type)) or (
        static_attr(value, "__wrapped__") is not None and not isinstance(value, property)
    ):
        return adopt(ctx, value, current)
    if isinstance(value, property) and type(current) is type(value):
        pairs = [(getattr(current, n), getattr(value, n)) for n in ("fget", "fset", "fdel")]
        kept = True
        for old_fn, new_fn in pairs:
            if (old_fn is None) != (new_fn is None) or (
                new_fn is not None and adopt(ctx, new_fn) is not old_fn
            ):
                kept = False
        if kept and same(current.__doc__, value.__doc__):
            return current
        return value
    return ctx.resolved(value)  # e.g. an enum member of a kept enum: the live member


def _refresh_abc(ctx: Context, old: type, new: type, adopt: Adopt, abstract: Any) -> None:
    """An ABC kept (its own ``_abc_impl`` stays) behaves like the new one: the virtual
    subclasses the new body registered are registered on it too (those registered at run
    time stay), its isinstance caches are cleared (a ``Protocol`` that gained a member must
    stop matching), and when its ``__abstractmethods__`` (``abstract`` before) changed, its
    subclasses, here or in modules not reloaded, recompute theirs as a fresh import of the
    new base would make them."""
    if not isinstance(old, abc.ABCMeta) or "_abc_impl" not in new.__dict__:
        return
    try:
        registry = abc._get_dump(new)[0]  # type: ignore[attr-defined]
        old_registry = abc._get_dump(old)[0]  # type: ignore[attr-defined]
    except Exception:
        log.debug("no abc registry for %s", ctx.label(old.__qualname__), exc_info=True)
        return
    before = [ref() for ref in old_registry]

    def undo() -> None:
        old._abc_registry_clear()  # type: ignore[attr-defined]
        for cls in before:
            if cls is not None:
                old.register(cls)
        old._abc_caches_clear()  # type: ignore[attr-defined]

    ctx.undo.record(undo, ctx.label(old.__qualname__))
    for ref in registry:
        cls = ref()
        if cls is not None:
            chosen = resolve(ctx, cls, adopt)
            if not isinstance(chosen, type) or chosen in before:
                continue
            try:
                old.register(chosen)
            except Exception:  # a __subclasshook__ or register override of the user's
                log.debug("%s.register(%r) failed", old.__qualname__, chosen, exc_info=True)
                continue
            ctx.act("registered", old.__qualname__, chosen.__qualname__)
    old._abc_caches_clear()  # type: ignore[attr-defined]
    if old.__dict__.get("__abstractmethods__") != abstract:
        # subclasses' abstract sets derive from this one: only a change can change them
        _update_abstract(ctx, old)


def _update_abstract(ctx: Context, cls: type) -> None:
    """Recompute ``__abstractmethods__`` down ``cls``'s subclass tree (``__subclasses__``
    only: no heap walk), recording each old value for undo."""
    todo = [cls]
    seen: set[int] = set()
    while todo and len(seen) < _MAX_SUBCLASSES:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if current is not cls:
            before = current.__dict__.get("__abstractmethods__", _MISSING)

            def undo(c: type = current, b: Any = before) -> None:
                if b is not _MISSING:
                    type.__setattr__(c, "__abstractmethods__", b)

            ctx.undo.record(undo, ctx.label(current.__qualname__))
            try:
                abc.update_abstractmethods(current)
            except Exception:
                log.debug("update_abstractmethods(%r) failed", current, exc_info=True)
        try:
            todo.extend(type.__subclasses__(current))
        except TypeError:
            continue


def _rebuild_pydantic(ctx: Context, old: type, new: type, adopt: Adopt) -> None:
    """A pydantic model's validator was built for the new class: rebuild it for the old,
    with field types naming the live classes (``a: A`` validates into the kept ``A``)."""
    if "__pydantic_validator__" not in new.__dict__:
        return
    rebuild = getattr(old, "model_rebuild", None)
    if not callable(rebuild):
        return
    if not new.__dict__.get("__pydantic_complete__", False):
        return  # not a finished model (pydantic's own BaseModel, or one awaiting rebuild)
    fields = new.__dict__.get("__pydantic_fields__")
    # the field infos are the new class's own objects: changing them changes nothing old
    for info in fields.values() if isinstance(fields, dict) else ():
        annotation = getattr(info, "annotation", None)
        live = _live_type(ctx, annotation, adopt)
        if live is not annotation:
            with contextlib.suppress(Exception):
                info.annotation = live
    try:
        rebuild(force=True)
    except Exception as exc:  # the class works; validation may make new-class objects
        log.debug("model_rebuild of %s failed", ctx.label(old.__qualname__), exc_info=True)
        ctx.warn(
            f"{ctx.label(old.__qualname__)}: pydantic model could not be rebuilt on the old "
            f"class ({type(exc).__name__}); validation may create instances of the new class"
        )


def _live_type(ctx: Context, hint: Any, adopt: Adopt, depth: int = 0) -> Any:
    """A type hint with the new classes it names replaced by the classes kept (``A``,
    ``list[A]``, ``Optional[A]``, ``A | None``); ``hint`` itself when nothing changes."""
    # ``isinstance(list[A], type)`` is True on 3.10: look at the real type first
    if type(hint) is not types.GenericAlias and isinstance(hint, type):
        return resolve(ctx, hint, adopt)
    args = getattr(hint, "__args__", None)
    if depth > 3 or not isinstance(args, tuple) or not args:
        return hint
    live = tuple(_live_type(ctx, arg, adopt, depth + 1) for arg in args)
    if all(a is b for a, b in zip(live, args, strict=True)):
        return hint
    try:
        if isinstance(hint, types.GenericAlias):
            return types.GenericAlias(hint.__origin__, live)  # type: ignore[arg-type]
        if isinstance(hint, types.UnionType):
            return functools.reduce(operator.or_, live)
        copy_with = getattr(hint, "copy_with", None)
        return copy_with(live) if callable(copy_with) else hint
    except Exception:  # noqa: BLE001 - an exotic hint: validation keeps the new class
        return hint


def fix_instance(ctx: Context, value: Any) -> None:
    """An instance the new body created of a class that was kept: give it the kept class."""
    cls = type(value)
    chosen = ctx.memo.get(id(cls))
    if chosen is None or chosen is cls or not isinstance(chosen, type):
        return
    if issubclass(cls, enum.Enum):
        return
    try:
        # object's own setter: classes like email.policy.EmailPolicy forbid setattr
        object.__setattr__(value, "__class__", chosen)
    except Exception:  # it stays an instance of the new class, which works too
        log.debug("could not give %r the kept class", type(value), exc_info=True)
