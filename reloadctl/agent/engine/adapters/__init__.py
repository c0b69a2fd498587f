"""Framework adapters: the one extension point where a framework's reload rules live.

Frameworks keep state outside the module being reloaded (SQLAlchemy's mappers and
``MetaData``, the app object a server holds, a click group, pydantic's validators). A plain
re-execution of the module body breaks that state or leaves it stale; an adapter knows
what to keep, what to re-register and what to refuse.

The protocol (``Adapter``), for each module one reload applies:

1. ``begin`` (before the new body runs, the old namespace in ``session.snapshot``): claim
   the framework objects of the old version, record what the framework holds for them,
   and make room for the body (e.g. take a mapped class's table out of its ``MetaData`` so
   the class can be declared again). Return False when nothing of the module concerns the
   adapter: then ``finish`` is not called. Every change is recorded in ``session.undo``
   first, so a failed or refused reload leaves the framework as it was.
2. ``finish`` (after the body ran and every new definition was matched to the old one;
   ``session.namespace`` holds the objects kept): decide, per claimed object, to keep it
   (restore what the framework holds), to re-register the new version into the object the
   program holds (merge routes into the served app), or to refuse with a reason
   (``session.refuse``: the whole module is restored and reported ``refused``). Whatever
   cannot be made restart-equivalent and is not refused gets ``session.warn``, naming the
   object, the consequence and what to do instead.

Rules:
1. An adapter is loaded only when its framework is already in ``sys.modules``: this
   package never imports a framework, and when no framework is loaded a reload pays one
   dict lookup per adapter.
2. An exception raised by an adapter (other than ``AdapterRefused``) is the engine's bug:
   it becomes ``AdapterFailed`` naming the adapter, the module is restored and reported
   ``failed``; the host never sees the exception.
3. Adapters run in registry order (``ADAPTERS``); each sees the namespace as the ones
   before it left it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

from reloadctl.agent.engine.context import Context
from reloadctl.agent.engine.undo import UndoLog
from reloadctl.results import Action

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final, NoReturn, TypeGuard, TypeVar

    _T = TypeVar("_T")

#: (framework module that must be loaded, adapter module, adapter class), in run order.
ADAPTERS: Final = (
    ("sqlalchemy.orm", "reloadctl.agent.engine.adapters.sqlalchemy_models", "MappedClasses"),
    ("pydantic", "reloadctl.agent.engine.adapters.pydantic_models", "Models"),
    ("flask", "reloadctl.agent.engine.adapters.flask_apps", "FlaskApps"),
    ("starlette.routing", "reloadctl.agent.engine.adapters.starlette_apps", "StarletteApps"),
    ("click", "reloadctl.agent.engine.adapters.click_groups", "ClickGroups"),
    ("celery", "reloadctl.agent.engine.adapters.celery_tasks", "CeleryTasks"),
    ("django.apps", "reloadctl.agent.engine.adapters.django_apps", "DjangoApps"),
    # stdlib, loaded in most processes: its begin() is a scan of the module's names
    ("dataclasses", "reloadctl.agent.engine.adapters.dataclass_models", "DataClasses"),
)


class AdapterRefused(Exception):
    """An adapter found a change that cannot be applied like a restart; ``str`` is the
    reason, told to the user with what to do instead."""


class AdapterFailed(Exception):
    """An adapter raised: an engine bug, reported as ``failed`` with nothing changed."""


class Session:
    """What an adapter sees of one module's reload, and how it reports."""

    def __init__(self, name: str, namespace: dict[str, Any], snapshot: dict[str, Any]) -> None:
        #: the module's name.
        self.name = name
        #: the live module dict (the new body's names; after matching, the objects kept).
        self.namespace = namespace
        #: the module dict as it was before the body ran (the old version's objects).
        self.snapshot = snapshot
        #: record every change here before making it (``UndoLog`` rules).
        self.undo: UndoLog = UndoLog()
        self.actions: list[Action] = []
        self.warnings: list[str] = []
        #: the engine's working state, set before ``finish`` (None during ``begin``).
        self.context: Context | None = None

    def old_classes(self) -> dict[str, type]:
        """Top-level names of the old version bound to classes this module defined (only
        classes are looked at: an attribute read on another object may run its code, as a
        lazy proxy's does)."""
        return {
            key: value
            for key, value in self.snapshot.items()
            if is_instance(value, type)
            and getattr(value, "__module__", None) == self.name
            and isinstance(getattr(value, "__qualname__", None), str)
        }

    def new_objects(self) -> list[Any]:
        """Every new definition the engine matched during this reload (kept or not)."""
        return list(self.context.keep) if self.context is not None else []

    def kept(self, key: str) -> bool:
        """True when top-level ``key`` is still bound to the old version's object."""
        old = self.snapshot.get(key, _MISSING)
        return old is not _MISSING and self.namespace.get(key, _MISSING) is old

    def act(self, kind: str, label: str, detail: str = "") -> None:
        """Report one action (``label`` is a full dotted name)."""
        self.actions.append(Action(kind, label, detail))

    def retract(self, label: str) -> None:
        """Withdraw the engine's actions on ``label`` and its members (the adapter undid
        them: e.g. a mapper put back)."""
        if self.context is not None:
            self.context.actions[:] = [
                a
                for a in self.context.actions
                if a.name != label and not a.name.startswith(label + ".")
            ]

    def warn(self, message: str) -> None:
        """Report what the user must know: the object, the consequence, what to do."""
        if message not in self.warnings:
            self.warnings.append(message)

    def refuse(self, reason: str) -> NoReturn:
        """Stop this reload: the module is restored and reported ``refused`` with
        ``reason``."""
        raise AdapterRefused(f"{self.name}: {reason}")


class Adapter:
    """One framework's reload rules (see the module docstring for the protocol).

    An instance serves one module's reload; attributes set in ``begin`` are there in
    ``finish``.
    """

    def begin(self, session: Session) -> bool:
        """Claim the old version's framework objects; False when there are none."""
        return False

    def finish(self, session: Session) -> None:
        """Keep, re-register or refuse what ``begin`` claimed (the body has run)."""


class Claims:
    """The adapters that claimed objects of one module's reload (``begin`` returned
    True), in registry order."""

    def __init__(self, session: Session, adapters: list[Adapter]) -> None:
        self.session = session
        self.adapters = adapters

    def finish(self, context: Context) -> None:
        """Run each adapter's ``finish`` (rule 2), then hand its report to ``context``."""
        session = self.session
        session.context = context
        for adapter in self.adapters:
            _guarded(adapter, adapter.finish, session)
        context.actions.extend(session.actions)
        for message in session.warnings:
            context.warn(message)


def begin(
    name: str, namespace: dict[str, Any], snapshot: dict[str, Any], undo: UndoLog
) -> Claims | None:
    """Run ``begin`` of every adapter whose framework is loaded (rule 1); None when none
    claimed anything. The adapters' changes are recorded in ``undo``."""
    loaded = [entry for entry in ADAPTERS if entry[0] in sys.modules]
    if not loaded:
        return None
    session = Session(name, namespace, snapshot)
    claimed: list[Adapter] = []
    try:
        for _framework, module, cls in loaded:
            adapter: Adapter = getattr(importlib.import_module(module), cls)()
            if _guarded(adapter, adapter.begin, session):
                claimed.append(adapter)
    finally:
        undo.extend(session.undo)
        session.undo = undo  # from here on, adapters record straight into the module's log
    return Claims(session, claimed) if claimed else None


def is_instance(value: object, kind: type[_T] | tuple[type[_T], ...]) -> TypeGuard[_T]:
    """``isinstance`` by the object's real type, never running the object's own code.

    ``isinstance`` falls back to a ``__class__`` attribute, which a proxy computes and a
    hostile object may raise from; adapters look at every value of a module, so they ask
    this instead (a proxy is not the framework object it stands for)."""
    try:
        return issubclass(type(value), kind)
    except Exception:  # noqa: BLE001 - a hostile __subclasshook__: not one of ours
        return False


def _guarded(adapter: Adapter, hook: Callable[[Session], Any], session: Session) -> Any:
    try:
        return hook(session)
    except AdapterRefused:
        raise
    except Exception as exc:
        raise AdapterFailed(
            f"{type(adapter).__name__} adapter raised {type(exc).__name__} on {session.name}: {exc}"
        ) from exc


_MISSING: Final = object()

__all__ = [
    "ADAPTERS",
    "Adapter",
    "AdapterFailed",
    "AdapterRefused",
    "Claims",
    "Session",
    "begin",
    "is_instance",
]
