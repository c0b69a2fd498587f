"""Enums: keep the old class and its members when membership only grows, else replace.

Rules:
1. When every old member still exists with the same value, the old class stays: its members
   keep their identity (``Color(1) is old_red``), new members are added to it (made
   instances of the old class; same layout, so ``__class__`` may be assigned) and methods
   are updated like any class.
2. When a member is removed or changes value, or the enum is a ``Flag`` that gains members
   (its bit masks are computed at class creation), the new class replaces the old one with
   a warning: members held from before keep the old class.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable

from reloadctl.agent.engine.classes import (
    copy_members,
    layout_change,
    record_class,
    replace_class,
)
from reloadctl.agent.engine.context import Context
from reloadctl.agent.engine.functions import same

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

    Adopt = Callable[..., Any]


#: Class-dict entries the enum machinery computes per class; the old class keeps its own.
_ENUM_INTERNALS: Final = frozenset(
    {
        "_member_map_",
        "_member_names_",
        "_value2member_map_",
        "_unhashable_values_",
        "_unhashable_values_map_",
        "_member_type_",
        "_value_repr_",
        "_new_member_",
        "_use_args_",
        "__new_member__",
        "_hashable_values_",
        "_singles_mask_",
        "_boundary_",
        "_flag_mask_",
        "_all_bits_",
        "_inverted_",
        "__new__",
    }
)


def is_enum(cls: type) -> bool:
    """True for an ``enum.Enum`` subclass."""
    return isinstance(cls, enum.EnumMeta)


def adopt_enum(ctx: Context, old: type, new: type, adopt: Adopt) -> type:
    """Rule 1 or rule 2 for an enum class pair; returns the class that stands for ``new``."""
    ctx.choose(new, old)
    if not (is_enum(old) and is_enum(new)):
        return replace_class(ctx, old, new, "it is an Enum in one version only", adopt)
    reason = layout_change(ctx, old, new, adopt) or _membership_change(old, new)
    if reason:
        return replace_class(ctx, old, new, reason, adopt)
    old_map: dict[str, Any] = old._member_map_  # type: ignore[attr-defined]
    new_map: dict[str, Any] = new._member_map_  # type: ignore[attr-defined]
    record_class(ctx, old)
    _record_tables(ctx, old)
    for name, member in new_map.items():
        ctx.keep.append(member)
        if name in old_map:
            ctx.memo[id(member)] = old_map[name]
    for name, member in new_map.items():
        if name in old_map:
            continue
        canonical = member._name_
        if canonical != name and canonical in old_map:
            chosen = old_map[canonical]  # a new alias of an existing member
        else:
            member.__class__ = old
            chosen = member
            old._member_names_.append(name)  # type: ignore[attr-defined]
            # an unhashable value is found by the enum's linear search instead
            with contextlib.suppress(TypeError):
                old._value2member_map_.setdefault(member._value_, member)  # type: ignore[attr-defined]
        old_map[name] = chosen
        type.__setattr__(old, name, chosen)
        ctx.memo[id(member)] = chosen
        ctx.act("added", f"{old.__qualname__}.{name}")
    skip = _ENUM_INTERNALS | frozenset(new_map) | frozenset(old_map)
    copy_members(ctx, old, new, adopt, skip=skip)
    return old


def _membership_change(old: type, new: type) -> str:
    """Why the members of ``new`` cannot be merged into ``old`` (rule 2), or ``""``."""
    old_map: dict[str, Any] = old._member_map_  # type: ignore[attr-defined]
    new_map: dict[str, Any] = new._member_map_  # type: ignore[attr-defined]
    removed = [name for name in old_map if name not in new_map]
    if removed:
        return f"members removed ({', '.join(removed)})"
    changed = [
        name for name in old_map if not _same_value(old_map[name]._value_, new_map[name]._value_)
    ]
    if changed:
        return f"member values changed ({', '.join(changed)})"
    if issubclass(old, enum.Flag) and len(new_map) != len(old_map):
        return "Flag members added (bit masks are fixed at class creation)"
    return ""


def _same_value(old: Any, new: Any) -> bool:
    """Equal values; bare ``object()`` sentinels (a fresh one per run) count as equal."""
    return same(old, new) or (type(old) is object and type(new) is object)


def _record_tables(ctx: Context, cls: type) -> None:
    """Record the member tables mutated in place, so undo restores them."""
    for name in ("_member_map_", "_member_names_", "_value2member_map_"):
        table = cls.__dict__.get(name)
        if isinstance(table, dict):
            ctx.undo.container(table, dict(table))
        elif isinstance(table, list):
            ctx.undo.container(table, list(table))
