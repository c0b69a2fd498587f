"""What the engine remembers per module: the source it applied, and how to undo the last
reload (one previous version per module), for ``rollback_modules`` and ``patched_modules``.

Changes happen under the engine's reload lock (``LOCK``); the record table itself has a
short private lock too, so ``records()`` (for ``patched_modules``) never waits for a reload.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from dataclasses import dataclass
from types import CodeType, ModuleType

from reloadctl.agent.engine.undo import UndoLog

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

#: The one process-wide reload lock: applying and rolling back.
LOCK: Final = threading.RLock()
_TABLE = threading.Lock()


def _new_table_lock_in_child() -> None:
    # a thread of the parent may have held the (briefly taken) table lock at fork time
    global _TABLE
    _TABLE = threading.Lock()


os.register_at_fork(after_in_child=_new_table_lock_in_child)


@dataclass(slots=True)
class ModuleRecord:
    """The engine's memory of one module it has patched (mutable, guarded by ``LOCK``)."""

    module: weakref.ref[ModuleType]
    loader: Any
    #: Digest of the source running now; None when unknown (rolled back to the import).
    digest: str | None
    #: Names the running version's execution bound; None when unknown (likewise).
    defined: frozenset[str] | None
    reloads: int
    last_reload: float
    sequence: int
    #: Reverts the last successful reload, or None once rolled back.
    undo: UndoLog | None
    previous_digest: str | None
    previous_defined: frozenset[str] | None
    #: The module code running now (for what its class bodies bound); None when unknown.
    code: CodeType | None = None
    previous_code: CodeType | None = None


_records: dict[str, ModuleRecord] = {}
_sequence = 0


def lookup(name: str, module: ModuleType) -> ModuleRecord | None:
    """The record of ``name`` if it is about this very module object (not a re-import)."""
    with _TABLE:
        record = _records.get(name)
    if record is None or record.module() is not module:
        return None
    return record


def knows_running_version(name: str, module: ModuleType) -> bool:
    """True when the engine applied the version ``module`` runs now, so it knows its digest,
    the names it bound and its code (not the case before the first reload, nor after a
    rollback to the imported version)."""
    record = lookup(name, module)
    return record is not None and record.digest is not None and record.defined is not None


def commit(
    name: str,
    module: ModuleType,
    *,
    loader: Any,
    digest: str,
    defined: frozenset[str],
    undo: UndoLog,
    code: CodeType,
) -> None:
    """Remember a successful reload of ``name``."""
    global _sequence
    _sequence += 1
    old = lookup(name, module)
    record = ModuleRecord(
        module=weakref.ref(module),
        loader=loader,
        digest=digest,
        defined=defined,
        reloads=(old.reloads if old else 0) + 1,
        last_reload=time.time(),
        sequence=_sequence,
        undo=undo,
        previous_digest=old.digest if old else None,
        previous_defined=old.defined if old else None,
        code=code,
        previous_code=old.code if old else None,
    )
    with _TABLE:
        _records[name] = record


def rolled_back(record: ModuleRecord) -> None:
    """Remember that ``record``'s last reload was undone."""
    global _sequence
    _sequence += 1
    with _TABLE:
        _rolled_back(record)


def _rolled_back(record: ModuleRecord) -> None:
    record.digest = record.previous_digest
    record.defined = record.previous_defined
    record.code = record.previous_code
    record.previous_code = None
    record.undo = None
    record.previous_digest = None
    record.previous_defined = None
    record.last_reload = time.time()
    record.sequence = _sequence


def records() -> list[tuple[str, ModuleRecord]]:
    """Every module patched since process start, in the order they were first patched."""
    with _TABLE:
        return [(name, record) for name, record in _records.items() if record.module() is not None]
