"""Requests and replies exchanged between the CLI and the agent.

Every value here is a frozen, slotted dataclass of plain fields (str, int, float, bool, None,
tuples of these or of other message or result values). They cross layers as values; only the
codec turns them into wire dicts and only the CLI renderer turns them into JSON. The result
values they carry (``ModuleResult``, ``PatchedModule``) are ``reloadctl.results``'.

Rules:
1. A request is one of ``ReloadRequest``, ``RollbackRequest``, ``StatusRequest``,
   ``PollRequest``; a reply is one of ``JobAccepted``, ``JobEvents``, ``AgentInfo``,
   ``ErrorReply``.
2. Fields added by protocol 2 (``wait_s``, ``verify``, the push fields of
   ``ReloadRequest``, ``PatchedModule.origin``/``digest``) default to what protocol 1
   meant without them: no wait (the submit reply is ``JobAccepted``), no verify, no push,
   origin and digest unknown.
3. A reload or rollback submitted with ``wait_s > 0`` is answered with ``JobEvents`` (its
   final results when the job finished within the wait, else what is known so far with
   ``done`` False, to be polled from its ``cursor``) instead of ``JobAccepted``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reloadctl.results import ModuleResult, PatchedModule

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

# -- requests (client -> agent) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PushedSource:
    """One file of a push (``reloadctl reload --push``): ``module``'s source text.

    ``path`` is the file's path relative to its root, with ``/`` separators
    (``pkg/__init__.py``, ``pkg/mod.py``); ``source`` is the text as the import system
    decodes it (coding cookie and universal newlines applied); ``sha256`` is the hex digest
    of ``source`` encoded as UTF-8, which is also the digest the engine reports.
    """

    module: str
    path: str
    source: str
    sha256: str
    is_package: bool = False


@dataclass(frozen=True, slots=True)
class ReloadRequest:
    """Reload ``modules`` as one transaction; ``dry_run`` validates and plans only."""

    modules: tuple[str, ...]
    dry_run: bool = False
    dependents: bool = False
    #: Seconds the agent may spend on the job before it reports a timeout.
    deadline_s: float = 30.0
    #: Protocol 2: seconds the submit reply may wait for the job to finish (rule 3).
    wait_s: float = 0.0
    #: Protocol 2: ``"module:function"`` called after applying (no arguments); if it
    #: raises or returns False the agent rolls this reload back (``VerifyFailed``).
    verify: str = ""
    #: Protocol 2: pushed source (``--push``), reloaded instead of the agent's disk files.
    push: tuple[PushedSource, ...] = ()
    #: Protocol 2: packages of ``push`` shipped whole (submodules not in it are removed).
    push_trees: tuple[str, ...] = ()
    #: Protocol 2: also write the pushed files to the agent's disk (accept_push="write").
    write: bool = False
    #: Protocol 2: allow pushed modules whose top-level name is new to the agent's process.
    allow_new_top_level: bool = False


@dataclass(frozen=True, slots=True)
class RollbackRequest:
    """Restore each module to the version it ran before its last reload."""

    modules: tuple[str, ...]
    deadline_s: float = 30.0
    #: Protocol 2: seconds the submit reply may wait for the job to finish (rule 3).
    wait_s: float = 0.0


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
