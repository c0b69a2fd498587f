"""Message values exchanged between the CLI and the agent, and the engine's result values.

Every value here is a frozen, slotted dataclass of plain fields (str, int, float, bool, None,
tuples of these or of other message values). They cross layers as values; only the codec
turns them into wire dicts and only the CLI renderer turns them into JSON.

Rules:
1. The engine's per-module outcome is a ``ModuleResult``; the agent forwards it unchanged and
   the client renders it. Its ``status`` is one of ``ENGINE_STATUSES``.
2. The client adds ``TARGET_STATUSES`` for targets that never produced a ``ModuleResult``.
3. A request is one of ``ReloadRequest``, ``RollbackRequest``, ``StatusRequest``,
   ``PollRequest``; a reply is one of ``JobAccepted``, ``JobEvents``, ``AgentInfo``,
   ``ErrorReply``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


# -- requests (client -> agent) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReloadRequest:
    """Reload ``modules`` as one transaction; ``dry_run`` validates and plans only."""

    modules: tuple[str, ...]
    dry_run: bool = False
    dependents: bool = False
    #: Seconds the agent may spend on the job before it reports a timeout.
    deadline_s: float = 30.0


@dataclass(frozen=True, slots=True)
class RollbackRequest:
    """Restore each module to the version it ran before its last reload."""

    modules: tuple[str, ...]
    deadline_s: float = 30.0


@dataclass(frozen=True, slots=True)
class StatusRequest:
    """Ask for ``AgentInfo``; answered at once, without a job."""


@dataclass(frozen=True, slots=True)
class PollRequest:
    """Fetch events of ``job`` from ``cursor`` on, waiting up to ``wait_s`` for the first."""

    job: str
    cursor: int = 0
    wait_s: float = 5.0


# -- replies (agent -> client) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobAccepted:
    """A reload or rollback job was queued; poll it with ``PollRequest(job)``."""

    job: str


@dataclass(frozen=True, slots=True)
class JobEvents:
    """Results of ``job`` from the requested cursor to ``cursor`` (exclusive)."""

    job: str
    cursor: int
    results: tuple[ModuleResult, ...] = ()
    done: bool = False


@dataclass(frozen=True, slots=True)
class PatchedModule:
    """A module this agent has patched since it started."""

    module: str
    reloads: int
    last_reload: float  # unix time
    #: True when the source on disk now differs from what is running; None if unknown.
    diverged: bool | None = None


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """What ``reloadctl status``/``ping`` shows about one agent."""

    pid: int
    program: str
    python: str
    version: str
    started_at: float  # unix time
    uptime_s: float
    address: str = ""
    read_only: bool = False
    patched: tuple[PatchedModule, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """The agent refused a request: ``code`` is one of ``ERROR_CODES``."""

    code: str
    message: str


ERROR_CODES: Final = frozenset(
    {
        "protocol",  # malformed or unknown message
        "forbidden",  # read-only agent, or module outside the allow list
        "busy",  # too many jobs
        "unknown_job",  # poll for a job this agent does not know (expired or never existed)
        "internal",  # an agent bug; details are in the agent's log, never in the reply
    }
)

Request = ReloadRequest | RollbackRequest | StatusRequest | PollRequest
Reply = JobAccepted | JobEvents | AgentInfo | ErrorReply
