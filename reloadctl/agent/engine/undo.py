"""The undo log: every change the engine makes is recorded here first, so it can be reverted.

Rules:
1. A change is recorded *before* it is made; reverting replays the records newest first.
2. Reverting never raises: a record that cannot be replayed is logged and skipped, so one
   broken object cannot leave the rest of a module half-restored.
3. A module namespace is restored by ``update`` first and deleting added names second, so a
   thread calling into the module never sees a name disappear that existed before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import CellType, FunctionType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

log = logging.getLogger(__name__)

#: The function attributes the engine swaps when it patches a function in place.
FUNCTION_ATTRS: Final = (
    "__code__",
    "__defaults__",
    "__kwdefaults__",
    "__doc__",
    "__annotations__",
    "__type_params__",
)

_MISSING: Final = object()


def replace_contents(target: dict[Any, Any], contents: dict[Any, Any]) -> None:
    """Make ``target`` hold exactly ``contents``: update first, then delete the extra keys,
    so a concurrent reader never misses a key present before and after (rule 3)."""
    target.update(contents)
    for key in [key for key in target if key not in contents]:
        target.pop(key, None)


class UndoLog:
    """An ordered record of reversible changes (see the module rules)."""

    __slots__ = ("_labels", "_records")

    def __init__(self) -> None:
        self._records: list[Callable[[], None]] = []
        self._labels: list[str] = []

    def __len__(self) -> int:
        return len(self._records)

    @property
    def labels(self) -> tuple[str, ...]:
        """Qualified names of what the recorded changes touched, first occurrence order."""
        return tuple(dict.fromkeys(label for label in self._labels if label))

    def record(self, undo: Callable[[], None], label: str = "") -> None:
        """Register ``undo`` to be called when this log is reverted."""
        self._records.append(undo)
        self._labels.append(label)

    def extend(self, other: UndoLog) -> None:
        """Append ``other``'s records (they will be reverted before this log's older ones)."""
        self._records.extend(other._records)
        self._labels.extend(other._labels)

    def revert(self) -> None:
        """Undo every recorded change, newest first, and empty the log."""
        self.revert_to(0)

    def revert_to(self, mark: int) -> None:
        """Undo the changes recorded after the log had ``mark`` records (``len`` then)."""
        while len(self._records) > mark:
            undo = self._records.pop()
            self._labels.pop()
            try:
                undo()
            except Exception:  # rule 2: keep restoring the rest
                log.exception("reloadctl: could not undo one change")

    # -- recorders for the kinds of change the engine makes --------------------------------

    def namespace(self, namespace: dict[str, Any], snapshot: dict[str, Any], label: str) -> None:
        """Record that ``namespace`` may change from here on; revert restores ``snapshot``."""

        def undo() -> None:
            replace_contents(namespace, snapshot)

        self.record(undo, label)

    def setitem(self, namespace: dict[str, Any], key: str, label: str) -> None:
        """Record the current binding of ``namespace[key]`` (or its absence)."""
        old = namespace.get(key, _MISSING)

        def undo() -> None:
            if old is _MISSING:
                namespace.pop(key, None)
            else:
                namespace[key] = old

        self.record(undo, label)

    def attribute(self, obj: Any, name: str, label: str) -> None:
        """Record ``obj``'s own attribute ``name`` (from its ``__dict__``), or its absence."""
        old = vars(obj).get(name, _MISSING)

        def undo() -> None:
            if old is _MISSING:
                if name in vars(obj):
                    type.__delattr__(obj, name) if isinstance(obj, type) else delattr(obj, name)
            elif isinstance(obj, type):
                type.__setattr__(obj, name, old)
            else:
                setattr(obj, name, old)

        self.record(undo, label)

    def function(self, fn: FunctionType, label: str) -> None:
        """Record everything ``patch_function`` may change on ``fn``."""
        saved = {name: getattr(fn, name) for name in FUNCTION_ATTRS if hasattr(fn, name)}
        saved_dict = dict(fn.__dict__)

        def undo() -> None:
            for name, value in saved.items():
                setattr(fn, name, value)
            replace_contents(fn.__dict__, saved_dict)

        self.record(undo, label)

    def cell(self, cell: CellType, label: str = "") -> None:
        """Record the contents of a closure cell."""
        try:
            old = cell.cell_contents
        except ValueError:
            old = _MISSING

        def undo() -> None:
            if old is _MISSING:
                del cell.cell_contents
            else:
                cell.cell_contents = old

        self.record(undo, label)

    def container(self, obj: Any, snapshot: Any, label: str = "") -> None:
        """Record a dict or list that will be mutated in place (restored to ``snapshot``)."""

        def undo() -> None:
            if isinstance(obj, dict):
                replace_contents(obj, snapshot)
            else:
                obj[:] = snapshot

        self.record(undo, label)
