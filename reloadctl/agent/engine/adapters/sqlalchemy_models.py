"""SQLAlchemy 2 declarative models: a mapped class keeps its mapper, table and instrumented
attributes while its methods are patched; a changed mapping is refused.

Rules:
1. A mapped class (or declarative base) of the module that the engine keeps in place gets
   back every class attribute that belongs to SQLAlchemy (``__mapper__``, ``__table__``,
   ``_sa_class_manager``, the instrumented attributes, the base's ``registry`` and
   ``metadata``) as it was before the reload: instances held from before, sessions and
   queries keep working, and methods, properties and plain attributes are the new ones.
2. The mapping of each kept class is compared with the new body's: table name, columns
   (name, type, nullable, key, defaults, foreign keys), mapped properties and
   relationships, inheritance and polymorphic identity. Any difference is refused with
   the reason: a mapper is fixed when the class is mapped (and the database has the old
   schema), so only a restart (after a migration) gives the new mapping.
3. So that the body can declare a class again in a registry that outlives the reload (a
   base in another module), the old class's table and registry entry are taken out before
   the body runs and put back afterwards; the new version's mapper is disposed of. A class
   the engine replaced (layout change, with the engine's warning) keeps its new mapping,
   as does a class the reload added to such a registry.
4. A mapped class added under a declarative base that the body re-created (the base kept
   in place, its new registry discarded) is refused: it would be mapped in a registry the
   program does not use. A mapped class removed from the source keeps its mapper (warned).
"""

from __future__ import annotations

import sys
from types import FunctionType

from reloadctl.agent.engine.adapters import Adapter, Session, is_instance

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

_RESTART: Final = (
    "a mapped class's table and mapper are fixed when it is mapped: restart the process "
    "(after migrating the database)"
)


def _orm() -> Any:
    return sys.modules["sqlalchemy.orm"]


def _is_sqlalchemy(value: Any) -> bool:
    """True for an object that SQLAlchemy put in a class dict (descriptors, mapper, table,
    registry, the declarative constructor)."""
    owner = getattr(value, "__module__", None) if is_instance(value, FunctionType) else None
    if owner is None:
        owner = type(value).__module__
    return is_instance(owner, str) and owner.startswith("sqlalchemy.")


def _mapper(cls: Any) -> Any:
    mapper = vars(cls).get("__mapper__")
    return mapper if is_instance(mapper, _orm().Mapper) else None


def _registry(cls: Any) -> Any:
    reg = vars(cls).get("registry")
    return reg if is_instance(reg, _orm().registry) else None


def _default(value: Any) -> Any:
    if value is None:
        return None
    arg = getattr(value, "arg", None)
    if callable(arg):
        return (type(value).__name__, "callable")
    return (type(value).__name__, str(arg))


def _column(col: Any) -> tuple[Any, ...]:
    return (
        col.key,
        col.name,
        repr(col.type),
        bool(col.primary_key),
        bool(col.nullable),
        col.unique,
        col.index,
        _default(col.default),
        _default(col.server_default),
        tuple(sorted(fk.target_fullname for fk in col.foreign_keys)),
    )


def _argument(value: Any) -> Any:
    """A relationship argument as the user wrote it, comparable across versions (a lambda
    or a class counts by name: its code is patched like any other)."""
    if value is None or is_instance(value, (str, bool, int)):
        return value
    name = getattr(value, "__name__", None)
    if is_instance(name, str):
        return name if name != "<lambda>" else "callable"
    return str(value)


def _prop(prop: Any) -> tuple[Any, ...]:
    kind = type(prop).__name__
    columns = getattr(prop, "columns", None)
    if columns is not None:
        return (kind, tuple(str(c) for c in columns))
    init_args = getattr(prop, "_init_args", None)
    if init_args is not None:  # a relationship: what was declared, configured or not
        declared = tuple((arg.name, _argument(arg.argument)) for arg in init_args)
        return (kind, _argument(getattr(prop, "argument", None)), str(prop.lazy), declared)
    return (kind,)


def mapping(cls: Any) -> dict[str, Any]:
    """What a restart would map ``cls`` to, as comparable values (rule 2); the mapper is
    read without being configured."""
    mapper = _mapper(cls)
    table = mapper.local_table
    inherits = mapper.inherits
    return {
        "table": getattr(table, "fullname", None),
        "columns": {c.key: _column(c) for c in getattr(table, "columns", ())},
        "properties": {key: _prop(p) for key, p in mapper._props.items()},
        "inherits": None if inherits is None else inherits.class_.__qualname__,
        "polymorphic_identity": repr(mapper.polymorphic_identity),
    }


def differences(old: dict[str, Any], new: dict[str, Any], label: str) -> list[str]:
    """Each difference between two ``mapping`` values, said plainly."""
    found: list[str] = []
    if old["table"] != new["table"]:
        found.append(f"{label}: table changed from {old['table']} to {new['table']}")
    table = new["table"] or label
    for kind in ("columns", "properties"):
        before, after = old[kind], new[kind]
        what = "column" if kind == "columns" else "mapped attribute"
        found += [f"{what} {table}.{k} added" for k in after if k not in before]
        found += [f"{what} {table}.{k} removed" for k in before if k not in after]
        found += [
            f"{what} {table}.{k} changed" for k in after if k in before and after[k] != before[k]
        ]
    for key in ("inherits", "polymorphic_identity"):
        if old[key] != new[key]:
            found.append(f"{label}: {key} changed")
    return found


class MappedClasses(Adapter):
    """SQLAlchemy 2 declarative mapped classes and bases (see the module rules)."""

    def begin(self, session: Session) -> bool:
        #: top-level name -> old class, for mapped classes and declarative bases
        self.classes: dict[str, type] = {}
        self.saved: dict[str, dict[str, Any]] = {}
        self.mappings: dict[str, dict[str, Any]] = {}
        for key, value in session.old_classes().items():
            if not is_instance(value, type) or (_mapper(value) is None and not _registry(value)):
                continue
            self.classes[key] = value
            self.saved[key] = {k: v for k, v in vars(value).items() if _is_sqlalchemy(v)}
            if _mapper(value) is not None:
                self.mappings[key] = mapping(value)
        if not self.classes:
            return False
        self.registries = _registries()
        known = self.registries
        name = session.name
        # a body that fails or is refused leaves the registries it created half-collected
        # (weak references): dispose of them, or configure_mappers() trips on them later
        session.undo.record(lambda: _dispose_registries(known, name), f"{name} (SQLAlchemy)")
        # rule 3: registries the body does not re-create (their base lives elsewhere)
        own = {id(_registry(c)) for c in self.classes.values() if _registry(c) is not None}
        self.moved: list[tuple[type, Any, Any]] = []
        for cls in self.classes.values():
            mapper = _mapper(cls)
            if mapper is None or id(mapper.registry) in own:
                continue
            registry, metadata = mapper.registry, mapper.local_table.metadata
            self._record(session, registry, metadata)
            metadata.remove(mapper.local_table)
            registry._dispose_cls(cls)
            self.moved.append((cls, registry, metadata))
        return True

    def _record(self, session: Session, registry: Any, metadata: Any) -> None:
        """Record ``metadata``'s tables and ``registry``'s mapped classes of this module,
        so undo puts back exactly the old ones (new mappers of this module disposed)."""
        tables = dict(metadata.tables)
        memos = {k: list(v) for k, v in metadata._fk_memos.items()}
        name = session.name
        old = [m.class_ for m in list(registry._managers) if m.class_.__module__ == name]

        def undo() -> None:
            _dispose_new(registry, name, old, everything=True)
            dict.clear(metadata.tables)
            dict.update(metadata.tables, tables)
            metadata._fk_memos.clear()
            metadata._fk_memos.update(memos)
            for cls in old:
                _class_registry("remove_class")(cls.__name__, cls, registry._class_registry)
                _class_registry("add_class")(cls.__name__, cls, registry._class_registry)

        session.undo.record(undo, f"{name} (SQLAlchemy registry)")

    def finish(self, session: Session) -> None:
        name = session.name
        problems: list[str] = []
        kept: dict[str, type] = {}
        for key, old in self.classes.items():
            label = f"{name}.{old.__qualname__}"
            if not session.kept(key):
                continue  # replaced by the engine (layout change): it warned already
            kept[key] = old
            new = self._new_version(session, old)
            if new is None:  # the new source does not define it: the engine prunes the name
                session.warn(
                    f"{label} was removed from the source: its mapper and table stay "
                    "registered until the process restarts"
                )
            elif key in self.mappings and _mapper(new) is not None:
                problems += differences(self.mappings[key], mapping(new), label)
        for key, value in session.namespace.items():
            mapper = _mapper(value) if is_instance(value, type) else None
            if mapper is None or key in self.classes or value.__module__ != name:
                continue
            if not any(mapper.registry is _registry(b) for b in kept.values()):
                continue
            problems.append(
                f"mapped class {name}.{value.__qualname__} is new, and its declarative base "
                "was re-created by this module (the base kept in place maps nothing new)"
            )
        if problems:
            session.refuse("; ".join(problems) + f": {_RESTART}")
        for key, old in kept.items():
            self._restore(session, old, self.saved[key])
        for cls, registry, metadata in self.moved:
            if cls in kept.values():
                self._put_back(session, cls, registry, metadata)
        # the body's own declarative base, discarded (the old one was kept): its mappers too
        _dispose_registries(self.registries, name)

    def _new_version(self, session: Session, old: type) -> type | None:
        for new in session.new_objects():
            if (
                is_instance(new, type)
                and new is not old
                and new.__qualname__ == old.__qualname__
                and new.__module__ == old.__module__
            ):
                return new
        return None

    def _restore(self, session: Session, cls: type, saved: dict[str, Any]) -> None:
        """Rule 1: the SQLAlchemy members of ``cls`` as before (the class dict was recorded
        by the engine before it changed)."""
        label = f"{session.name}.{cls.__qualname__}"
        for key, value in saved.items():
            if vars(cls).get(key) is not value:
                type.__setattr__(cls, key, value)
                session.retract(f"{label}.{key}")
        for key in [k for k, v in vars(cls).items() if k not in saved and _is_sqlalchemy(v)]:
            type.__delattr__(cls, key)
            session.retract(f"{label}.{key}")
        session.act("kept", label, "SQLAlchemy mapping kept")

    def _put_back(self, session: Session, cls: Any, registry: Any, metadata: Any) -> None:
        """Rule 3: the new version's mapper out, the old table and registry entry in."""
        _dispose_new(registry, session.name, [cls])
        table = cls.__table__
        metadata._add_table(table.name, table.schema, table)
        _class_registry("add_class")(cls.__name__, cls, registry._class_registry)


def _class_registry(function: str) -> Any:
    """``add_class``/``remove_class`` of ``sqlalchemy.orm.clsregistry`` (2.1 made them
    private: ``_add_class``)."""
    module = sys.modules["sqlalchemy.orm.clsregistry"]
    return getattr(module, "_" + function, None) or getattr(module, function)


def _registries() -> set[Any]:
    return set(sys.modules["sqlalchemy.orm.mapper"]._mapper_registries)


def _dispose_registries(known: set[Any], module: str) -> None:
    """Dispose of the registries created since ``known`` whose classes are ``module``'s."""
    for registry in _registries() - known:
        classes = [m.class_ for m in list(registry._managers)]
        if classes and all(c.__module__ == module for c in classes):
            registry.dispose()


def _dispose_new(registry: Any, module: str, old: list[Any], *, everything: bool = False) -> None:
    """Dispose of the mappers ``registry`` holds for new classes of ``module`` that replace
    a class of ``old`` (same qualname), or for every new class when ``everything``."""
    names = {c.__qualname__ for c in old}
    for manager in list(registry._managers):
        cls = manager.class_
        if cls.__module__ != module or cls in old:
            continue
        if not everything and cls.__qualname__ not in names:
            continue
        registry._dispose_manager_and_mapper(manager)
        registry._managers.pop(manager, None)
