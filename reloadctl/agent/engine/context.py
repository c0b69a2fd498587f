"""The working state of one module's reload: old objects by qualname, choices made, report."""

from __future__ import annotations

from types import CodeType, FunctionType
from typing import Any

from reloadctl.agent.engine.undo import UndoLog
from reloadctl.proto.messages import Action


def is_definition(obj: Any, module: str) -> bool:
    """True for a function, class or wrapper object defined by ``module``'s source."""
    if not isinstance(obj, (FunctionType, type)) and not hasattr_safe(obj, "__wrapped__"):
        return False
    try:
        return getattr(obj, "__module__", None) == module and isinstance(
            getattr(obj, "__qualname__", None), str
        )
    except Exception:  # noqa: BLE001 - a hostile __getattr__ must not break a reload
        return False


def hasattr_safe(obj: Any, name: str) -> bool:
    """``hasattr`` that also treats any exception raised by a lookup as "absent"."""
    try:
        return hasattr(obj, name)
    except Exception:  # noqa: BLE001 - same reason
        return False


class Context:
    """State shared by the patchers while one module's new objects are matched to old ones.

    ``memo`` maps ``id(new object)`` to the object that now stands for it (the old object
    when it was patched in place, else the new one); ``keep`` holds every new object looked
    at so those ids stay valid for the whole reload.
    """

    def __init__(self, module: str, old_objects: dict[str, Any], undo: UndoLog) -> None:
        self.module = module
        self.old = old_objects
        self.old_ids = {id(obj) for obj in old_objects.values()}
        self.undo = undo
        self.memo: dict[int, Any] = {}
        self.keep: list[Any] = []
        self.actions: list[Action] = []
        self.warnings: list[str] = []
        #: (old nested code, new nested code, qualified name): closures that may be live.
        self.closures: list[tuple[CodeType, CodeType, str]] = []
        #: (new class, old class) pairs kept by identity: instances of new -> old.
        self.kept_classes: list[tuple[type, type]] = []

    def label(self, qualname: str) -> str:
        """The name under which an object of this module is reported (``m.C.meth``)."""
        return f"{self.module}.{qualname}"

    def act(self, kind: str, qualname: str, detail: str = "") -> None:
        """Report one action on an object of this module."""
        self.actions.append(Action(kind, self.label(qualname), detail))

    def warn(self, message: str) -> None:
        """Report something the user must know."""
        if message not in self.warnings:
            self.warnings.append(message)

    def choose(self, new: Any, chosen: Any) -> Any:
        """Remember that ``chosen`` stands for ``new`` from now on; return ``chosen``."""
        self.keep.append(new)
        self.memo[id(new)] = chosen
        return chosen

    def resolved(self, obj: Any) -> Any:
        """The object standing for ``obj`` (``obj`` itself when it was not matched)."""
        return self.memo.get(id(obj), obj)

    def is_new(self, obj: Any) -> bool:
        """True when ``obj`` was created by this reload's execution (not an old object)."""
        return id(obj) not in self.old_ids
