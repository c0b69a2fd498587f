"""The result vocabulary: what a reload did to one module in one process, as plain values.

Every value here is a frozen, slotted dataclass of plain fields (str, int, float, bool, None,
tuples of these or of other result values). The engine produces them, the agent forwards
them, the codec turns them into wire dicts and the client renders them; none of this module
knows a wire, a socket or a terminal.

Rules:
1. The engine's per-module outcome is a ``ModuleResult``; its ``status`` is one of
   ``ENGINE_STATUSES``.
2. The client adds ``TARGET_STATUSES`` for targets that never produced a ``ModuleResult``.
3. ``OK_STATUSES`` are the statuses that, on their own, mean "did what was asked"; whether a
   whole run succeeded is decided in one place, ``reloadctl.client.verdict``.
"""

from __future__ import annotations

from dataclasses import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

# -- statuses ------------------------------------------------------------------------------

RELOADED: Final = "reloaded"
UNCHANGED: Final = "unchanged"
NOT_LOADED: Final = "not_loaded"
FAILED: Final = "failed"
REFUSED: Final = "refused"

UNREACHABLE: Final = "unreachable"
TIMEOUT: Final = "timeout"
AUTH_FAILED: Final = "auth_failed"
NOT_ATTEMPTED: Final = "not_attempted"

ENGINE_STATUSES: Final = frozenset({RELOADED, UNCHANGED, NOT_LOADED, FAILED, REFUSED})
TARGET_STATUSES: Final = frozenset({UNREACHABLE, TIMEOUT, AUTH_FAILED, NOT_ATTEMPTED})
ALL_STATUSES: Final = ENGINE_STATUSES | TARGET_STATUSES
#: Statuses that count as "did what was asked" for one (target, module).
OK_STATUSES: Final = frozenset({RELOADED, UNCHANGED, NOT_LOADED})


# -- engine results ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a module failed or was refused.

    ``type`` is the original exception class name (``"SyntaxError"``, ``"ZeroDivisionError"``)
    or one of the engine's own kinds (``"Refused"``, ``"RolledBack"``, ``"NotLoaded"``);
    ``traceback`` is the formatted traceback text, or ``""``.
    """

    type: str
    message: str
    traceback: str = ""


@dataclass(frozen=True, slots=True)
class Action:
    """One thing the engine did (or, in a dry run, would do) to a module.

    ``kind`` is a verb: ``patched`` (code swapped in place, identity kept), ``added``,
    ``removed`` (pruned top-level name or class member), ``replaced`` (a new object took the
    name; identity not kept), ``rebound`` (a dependent's ``from m import x`` rebound),
    ``cache_cleared``, ``hook`` (``__before_reload__``/``__reload__`` called), ``restored``
    (rollback). ``name`` is the qualified name (``m.C.meth``); ``detail`` is optional prose.
    """

    kind: str
    name: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ModuleResult:
    """The outcome of reloading one module in one process (the engine's contract)."""

    module: str
    status: str
    error: ErrorInfo | None = None
    actions: tuple[Action, ...] = ()
    warnings: tuple[str, ...] = ()
    duration_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class PatchedModule:
    """A module this agent has patched since it started."""

    module: str
    reloads: int
    last_reload: float  # unix time
    #: True when the source on disk now differs from what is running; None if unknown.
    diverged: bool | None = None
    #: Where the running source came from: ``"disk"``, ``"push:<sha256 prefix>"``, or
    #: ``""`` when unknown (rolled back to the imported version, or an older agent).
    origin: str = ""
    #: The sha256 of the running source (the engine's digest), or ``""`` when unknown.
    digest: str = ""
