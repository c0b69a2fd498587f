"""Classes whose layout limits what a reload can do: instances that cannot change class,
and new classes whose bases cannot be re-pointed at the kept classes."""

from __future__ import annotations

from types import GetSetDescriptorType, MemberDescriptorType

from reloadctl.agent.engine.context import Context
from reloadctl.agent.engine.functions import same

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

#: Class-dict keys that belong to a class object and are never copied into another.
_NEVER: Final = frozenset({"__dict__", "__weakref__"})


def instances_stuck(ctx: Context, old: type, new: type) -> str:
    """Rule 1b: the new body bound instances of ``new`` whose layout cannot take another
    class (variable size with a ``__dict__``: ``int``/``tuple`` subclasses, like sqlparse's
    ``Keyword = Token.Keyword``). When each is equal to the old instance bound under the
    same name, that old instance stands for it (the module keeps its own objects, of the
    kept class); otherwise the class is replaced, so the module's own objects are
    instances of the module's class."""
    pairs = [] if issubclass(new, type) else ctx.stuck.get(id(new), [])
    if all(type(held) is old and same(held, made) for made, held in pairs):
        for made, held in pairs:
            ctx.choose(made, held)
        return ""
    return "the new body made instances of it that cannot take the kept class"


def rebuilt(ctx: Context, new: type, bases: tuple[type, ...]) -> type:
    """``new`` made again by its metaclass on ``bases`` (see ``fix_new_class``)."""
    body = {
        key: value
        for key, value in new.__dict__.items()
        if key not in _NEVER
        and not (
            isinstance(value, (MemberDescriptorType, GetSetDescriptorType))
            and getattr(value, "__objclass__", None) is new
        )
    }
    try:
        made: type = type(new)(new.__name__, bases, body)
        made.__qualname__ = new.__qualname__
    except Exception as exc:  # noqa: BLE001 - class keywords or a metaclass that objects
        ctx.warn(
            f"{ctx.label(new.__qualname__)} still derives from the classes of the discarded "
            f"new version: its bases could not be re-pointed ({type(exc).__name__})"
        )
        return new
    ctx.keep.append(new)
    ctx.memo[id(new)] = made
    ctx.claimed.add(id(made))
    ctx.act("rebuilt", new.__qualname__, "on the live base classes")
    return made
