"""dataclasses and attrs classes: field changes on a kept class are told, with what they
mean for the instances created before the reload.

The engine keeps such a class in place (or replaces it with a warning when its layout
changed: attrs' slotted classes gaining a field) and its generated ``__init__``,
``__repr__``, ``__eq__`` are the new ones, so new instances are as after a restart. The
instances made before keep the values the old code gave them.

Rules (for each kept class whose fields changed; one warning per class):
1. a field added that the class does not provide as a class attribute (attrs never does;
   a dataclass field with a plain default does): instances created before lack it;
2. a field removed: they still carry it;
3. a default changed: they hold the old default where it was used.
A class whose fields did not change gets no warning.
4. Only classes declared with a ``class`` statement are looked at: a class a call builds
   from data (``make_dataclass``) is data too.
"""

from __future__ import annotations

import sys

from reloadctl.agent.engine.adapters import Adapter, Session, is_instance

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _default(value: Any) -> str:
    name = getattr(value, "__qualname__", None)
    factory = getattr(value, "factory", None)  # attrs.Factory
    if factory is not None:
        return f"factory {getattr(factory, '__qualname__', repr(factory))}"
    return name if is_instance(name, str) else repr(value)


def fields(cls: type) -> dict[str, str] | None:
    """Each field of a dataclass or attrs class with its default, or None for others."""
    attrs_fields = vars(cls).get("__attrs_attrs__")
    if attrs_fields is not None:
        return {a.name: _default(a.default) for a in attrs_fields}
    dc_fields = vars(cls).get("__dataclass_fields__")
    if not is_instance(dc_fields, dict):
        return None
    dataclasses = sys.modules["dataclasses"]
    found: dict[str, str] = {}
    for name, f in dc_fields.items():
        if f._field_type is not dataclasses._FIELD:
            continue  # ClassVar and InitVar pseudo-fields
        if f.default_factory is not dataclasses.MISSING:
            found[name] = f"factory {_default(f.default_factory)}"
        else:
            found[name] = "required" if f.default is dataclasses.MISSING else _default(f.default)
    return found


class DataClasses(Adapter):
    """dataclasses and attrs classes of the module (see the module rules)."""

    def begin(self, session: Session) -> bool:
        self.classes: dict[str, tuple[type, dict[str, str]]] = {}
        for key, value in session.old_classes().items():
            if is_instance(value, type):
                found = fields(value)
                if found is not None:
                    self.classes[key] = (value, found)
        return bool(self.classes)

    def finish(self, session: Session) -> None:
        ctx = session.context
        for key, (cls, before) in self.classes.items():
            if not session.kept(key):
                continue  # replaced (the engine warned) or removed
            if ctx is not None and cls.__qualname__ not in ctx.defines:
                continue  # rule 4: made by a call (make_dataclass), not declared
            after = fields(cls) or {}
            lacking = [f for f in after if f not in before and f not in vars(cls)]
            removed = [f for f in before if f not in after]
            defaults = [f for f in after if f in before and after[f] != before[f]]
            said = []
            if lacking:
                said.append(f"lack field {', '.join(lacking)}")
            if removed:
                said.append(f"still carry removed field {', '.join(removed)}")
            if defaults:
                said.append(f"hold the old default of {', '.join(defaults)}")
            if said:
                session.warn(
                    f"{session.name}.{cls.__qualname__}: instances created before this reload "
                    f"{'; '.join(said)}: recreate them, or restart"
                )
