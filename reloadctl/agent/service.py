"""The rpyc service of the agent: two byte methods, sealed msgpack in and out, nothing else.

Rules:
1. Only ``submit(frame: bytes) -> bytes`` and ``poll(frame: bytes) -> bytes`` are reachable
   (our own ``_rpyc_getattr``; rpyc's inherited ``get_service_name`` and every other
   attribute are refused). Arguments are checked with ``type(x) is bytes``, never
   ``isinstance`` (a netref can claim to be bytes).
2. A frame is unsealed with the connection's ``Session`` (MAC + counter), decoded with
   ``codec.decode_request`` and dispatched; the reply is encoded and sealed. Every failure
   becomes an ``ErrorReply``: nothing raises across rpyc.
3. ``submit`` takes ``ReloadRequest``/``RollbackRequest`` (a job, ``JobAccepted``; with a
   ``wait_s``, the job's ``JobEvents`` after up to that wait) and ``StatusRequest``
   (``AgentInfo`` at once); ``poll`` takes ``PollRequest`` only. Each reply is encoded in
   the protocol version of its request; a request that cannot be read is answered in
   protocol 1, which every client reads.
4. A read-only agent answers reload and rollback (dry runs included) with
   ``ErrorReply("forbidden")``. Before a job is queued, ``sys.audit("reloadctl.reload",
   modules)`` (or ``"reloadctl.rollback"``) runs; a host audit hook that raises vetoes the
   request (``ErrorReply("forbidden")``).
5. Every request is logged with its id, the peer, the modules and the outcome; secrets,
   frames and keys never are.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import time
from dataclasses import dataclass, field, replace

from rpyc.core.service import Service

import reloadctl
from reloadctl.agent.config import AgentConfig, current_program
from reloadctl.agent.jobs import JobManager, JobsBusy, UnknownJob
from reloadctl.errors import AuthenticationError, LocalProtocolError, RemoteProtocolError
from reloadctl.proto import codec, messages
from reloadctl.proto.auth import Session
from reloadctl.proto.messages import ErrorReply, JobEvents, Reply
from reloadctl.results import ModuleResult

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

log = logging.getLogger(__name__)

_MAX_TRACEBACK: Final = 16_000
_MAX_MESSAGE: Final = 4_000
_EXPOSED: Final = ("submit", "poll")


@dataclass(slots=True)
class AgentState:
    """What every connection of one agent shares."""

    config: AgentConfig
    jobs: JobManager
    address: str
    started_at: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)
    request_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def info(self) -> messages.AgentInfo:
        """This agent's ``AgentInfo`` (asks the engine for patched modules)."""
        return messages.AgentInfo(
            pid=os.getpid(),
            program=current_program(),
            python="{}.{}.{}".format(*sys.version_info[:3]),
            version=reloadctl.__version__,
            started_at=self.started_at,
            uptime_s=max(0.0, time.monotonic() - self.started_monotonic),
            address=self.address,
            read_only=self.config.read_only,
            patched=tuple(self.jobs.patched_modules()),
        )


def _shrink(result: ModuleResult) -> ModuleResult:
    error = result.error
    if error is not None:
        error = replace(
            error,
            message=error.message[:_MAX_MESSAGE],
            traceback=error.traceback[-_MAX_TRACEBACK:],
        )
    return replace(result, error=error, actions=result.actions[:500], warnings=result.warnings[:50])


def encode_events(events: JobEvents, version: int = codec.VERSION) -> bytes:
    """Encode ``events``, sending fewer results (and a smaller cursor) if it is too large."""
    results = events.results
    start = events.cursor - len(results)
    count = len(results)
    shrunk = False
    while True:
        part = (
            events
            if count == len(results) and not shrunk
            else JobEvents(
                job=events.job,
                cursor=start + count,
                results=results[:count],
                done=events.done and count == len(results),
            )
        )
        try:
            return codec.encode(part, version)
        except LocalProtocolError:
            if count > 1:
                count //= 2
            elif not shrunk:
                results = tuple(_shrink(r) for r in results)
                shrunk = True
            else:
                raise


class AgentService(Service):  # type: ignore[misc]
    """One instance per connection; see the module rules.

    Args:
        state: what every connection of the agent shares.
        session: the connection's authenticated session (None: every request is refused).
        peer: who is at the other end, for the logs.
    """

    def __init__(self, state: AgentState, session: Session | None, peer: str = "?") -> None:
        self._state = state
        self._session = session if isinstance(session, Session) else None
        self._peer = peer

    def __repr__(self) -> str:
        return "<reloadctl agent>"

    def __dir__(self) -> list[str]:
        return list(_EXPOSED)

    def __hash__(self) -> int:
        # rpyc answers HANDLE_HASH with hash(obj); the default is derived from the heap
        # address, which a peer has no business learning.
        return 0

    # -- rpyc hooks ------------------------------------------------------------------------

    def on_connect(self, conn: Any) -> None:
        log.info("agent: connection from %s", self._peer)

    def on_disconnect(self, conn: Any) -> None:
        log.debug("agent: %s disconnected", self._peer)

    def _rpyc_getattr(self, name: object) -> Any:
        if name == "submit":
            return self.exposed_submit
        if name == "poll":
            return self.exposed_poll
        raise AttributeError("cannot access that attribute")

    # -- the two methods -------------------------------------------------------------------

    def exposed_submit(self, frame: object) -> bytes:
        """A sealed ``ReloadRequest``/``RollbackRequest``/``StatusRequest`` -> sealed reply."""
        return self._serve(frame, poll=False)

    def exposed_poll(self, frame: object) -> bytes:
        """A sealed ``PollRequest`` -> sealed ``JobEvents`` (or ``ErrorReply``)."""
        return self._serve(frame, poll=True)

    # -- internals -------------------------------------------------------------------------

    def _serve(self, frame: object, *, poll: bool) -> bytes:
        session = self._session
        if session is None:  # not authenticated through our server: refuse everything
            return codec.encode(ErrorReply("forbidden", "no session"), 1)
        request_id = f"r{next(self._state.request_ids)}"
        version = [1]  # the reply speaks the request's version (protocol 1 if unreadable)
        try:
            reply = self._answer(session, frame, poll=poll, request_id=request_id, out=version)
        except BaseException:  # rule 2: an agent bug (or a hook's SystemExit) still answers
            log.exception("request %s from %s: agent error", request_id, self._peer)
            reply = ErrorReply("internal", "agent error; see the agent's log")
        try:
            data = (
                encode_events(reply, version[0])
                if isinstance(reply, JobEvents)
                else codec.encode(reply, version[0])
            )
        except LocalProtocolError:
            log.exception("request %s: reply could not be encoded", request_id)
            data = codec.encode(ErrorReply("internal", "reply could not be encoded"), 1)
        return session.seal(data)

    def _answer(
        self, session: Session, frame: object, *, poll: bool, request_id: str, out: list[int]
    ) -> Reply:
        if type(frame) is not bytes:
            log.warning("request %s from %s: argument is not bytes", request_id, self._peer)
            return ErrorReply("protocol", "expected one bytes argument")
        try:
            payload = session.unseal(frame)
        except AuthenticationError as exc:
            log.warning("request %s from %s rejected: %s", request_id, self._peer, exc)
            return ErrorReply("protocol", f"message rejected: {exc}")
        try:
            request, out[0] = codec.decode_request_versioned(payload)
        except RemoteProtocolError as exc:
            log.warning("request %s from %s: protocol error: %s", request_id, self._peer, exc)
            return ErrorReply("protocol", str(exc))
        if poll:
            if not isinstance(request, messages.PollRequest):
                return ErrorReply("protocol", "poll takes a poll request only")
            return self._poll(request)
        if isinstance(request, messages.StatusRequest):
            log.info("request %s from %s: status", request_id, self._peer)
            return self._state.info()
        if isinstance(request, (messages.ReloadRequest, messages.RollbackRequest)):
            return self._submit(request, request_id)
        return ErrorReply("protocol", "submit takes reload, rollback or status requests")

    def _poll(self, request: messages.PollRequest) -> Reply:
        try:
            events = self._state.jobs.poll(request.job, request.cursor, request.wait_s)
        except UnknownJob:
            return ErrorReply("unknown_job", f"no job {request.job!r} (expired or never existed)")
        if events.done:
            log.debug("poll of job %s by %s: done", request.job, self._peer)
        return events

    def _submit(
        self, request: messages.ReloadRequest | messages.RollbackRequest, request_id: str
    ) -> Reply:
        kind = "reload" if isinstance(request, messages.ReloadRequest) else "rollback"
        modules = list(request.modules)
        what = f"{kind} {modules}" + (" (dry run)" if getattr(request, "dry_run", False) else "")
        if self._state.config.read_only:
            log.warning("request %s from %s: %s refused: read-only", request_id, self._peer, what)
            return ErrorReply("forbidden", "this agent is read-only: reload and rollback refused")
        if isinstance(request, messages.ReloadRequest) and request.push:
            from reloadctl.agent import push

            refused = push.check(
                self._state.config, request, peer=self._peer, request_id=request_id
            )
            if refused is not None:
                return refused  # type: ignore[no-any-return]
        try:
            sys.audit(f"reloadctl.{kind}", tuple(modules))
        except BaseException as exc:  # noqa: BLE001 - any hook exception vetoes, SystemExit too
            log.warning(
                "request %s from %s: %s vetoed by an audit hook: %s",
                request_id,
                self._peer,
                what,
                type(exc).__name__,
            )
            return ErrorReply(
                "forbidden", f"vetoed by the host's audit hook ({type(exc).__name__}: {exc})"
            )
        try:
            job = self._state.jobs.submit(request, peer=self._peer, request_id=request_id)
        except JobsBusy as exc:
            log.warning("request %s from %s: %s refused: %s", request_id, self._peer, what, exc)
            return ErrorReply("busy", str(exc))
        log.info("request %s from %s: %s accepted as job %s", request_id, self._peer, what, job)
        if request.wait_s > 0:  # protocol 2: the finished job in the submit reply
            return self._poll(messages.PollRequest(job, 0, request.wait_s))
        return messages.JobAccepted(job)
