"""The protocol conversation with one authenticated agent: submit, poll until done, and the
fall back to protocol 1 for an older agent.

Rules:
1. Requests are sealed with the connection's ``Session`` and encoded in ``Call.version``
   (``codec.VERSION`` at first); replies must be ``bytes`` that unseal and decode, else
   ``RemoteProtocolError``. An ``ErrorReply`` becomes ``TargetRefused``.
2. Protocol 2: a reload or rollback is submitted with a ``wait_s`` (up to
   ``MAX_POLL_WAIT_S``, within the deadline), so a job that finishes in that time comes
   back in the submit reply (``JobEvents``); otherwise it is polled until done.
3. An agent that refuses the request's version with an error naming the versions it speaks
   (``codec.spoken_versions``), protocol 1 among them, gets the same request again in
   protocol 1 (no ``wait_s``), and every later request of this connection too; a
   ``--verify`` or ``--push`` reload cannot be expressed in protocol 1 and is
   ``TargetRefused``: one line saying the agent speaks protocol 1 and the option needs 2.
4. Each reply is checked against the request: status gets ``AgentInfo``, a job gets its
   own ``JobEvents`` with a matching cursor and at most one result per requested module
   (a push: per pushed module too).
   A job not done by the deadline is ``TargetTimeout`` (it keeps running in the agent).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from reloadctl.errors import (
    AuthenticationError,
    LocalProtocolError,
    RemoteProtocolError,
    TargetRefused,
    TargetTimeout,
)
from reloadctl.proto import auth, codec
from reloadctl.proto.messages import (
    AgentInfo,
    ErrorReply,
    JobAccepted,
    JobEvents,
    PollRequest,
    ReloadRequest,
    Reply,
    RollbackRequest,
    StatusRequest,
)
from reloadctl.results import ModuleResult

__all__ = ["MAX_POLL_WAIT_S", "Call", "converse"]

#: Longest single long-poll; short enough that a dead agent is noticed by rpyc's timer.
MAX_POLL_WAIT_S: Final = 5.0

Request = ReloadRequest | RollbackRequest | StatusRequest


class Call:
    """Seal, send, receive, verify and decode one request over an rpyc method (rule 1)."""

    #: The protocol version requests are sent in (lowered once for an older agent).
    version: int = codec.VERSION

    def __init__(
        self,
        method: Callable[[bytes], object],
        session: auth.Session,
        where: str,
        arm: Callable[[], None],
    ) -> None:
        self._method = method
        self._session = session
        self._where = where
        self._arm = arm

    def __call__(self, request: Request | PollRequest) -> Reply:
        try:
            frame = self._session.seal(codec.encode(request, self.version))
        except LocalProtocolError as exc:
            raise RemoteProtocolError(f"{self._where}: {exc}") from None
        self._arm()
        raw = self._method(frame)
        if type(raw) is not bytes:
            raise RemoteProtocolError(f"{self._where}: the agent replied with a non-bytes value")
        try:
            payload = self._session.unseal(raw)
        except AuthenticationError as exc:
            raise RemoteProtocolError(f"{self._where}: reply rejected: {exc}") from None
        try:
            return codec.decode_reply(payload)
        except RemoteProtocolError as exc:
            raise RemoteProtocolError(f"{self._where}: {exc}") from None


def _refused(where: str, reply: ErrorReply) -> TargetRefused:
    err = TargetRefused(reply.code, reply.message)
    err.args = (f"{where}: {reply.code}: {reply.message}",)
    return err


def converse(
    submit: Call, poll: Call, request: Request, deadline: float, where: str
) -> AgentInfo | tuple[ModuleResult, ...]:
    """Run ``request`` through ``submit`` (and ``poll``) until its answer, by ``deadline``
    (a ``time.monotonic()`` value).

    Raises:
        TargetRefused, TargetTimeout, RemoteProtocolError: rules 1, 3 and 4.
    """
    if not isinstance(request, StatusRequest) and request.wait_s == 0:
        # rule 2: a job that finishes within the wait comes back in the submit reply
        left = deadline - time.monotonic()
        request = replace(request, wait_s=max(0.001, min(MAX_POLL_WAIT_S, left - 0.05)))
    reply = submit(request)
    if isinstance(reply, ErrorReply) and reply.code == "protocol":
        request = _older_agent(request, reply, where)
        submit.version = poll.version = 1
        reply = submit(request)
    if isinstance(reply, ErrorReply):
        raise _refused(where, reply)
    if isinstance(request, StatusRequest):
        if not isinstance(reply, AgentInfo):
            raise RemoteProtocolError(f"{where}: status answered with {type(reply).__name__}")
        return reply
    results: list[ModuleResult] = []
    events: Reply | None = None
    if isinstance(reply, JobEvents) and request.wait_s > 0:
        events, job = reply, reply.job
    elif isinstance(reply, JobAccepted):
        job = reply.job
    else:
        raise RemoteProtocolError(f"{where}: submit answered with {type(reply).__name__}")
    while True:
        if events is not None:
            if isinstance(events, ErrorReply):
                raise _refused(where, events)
            if not isinstance(events, JobEvents) or events.job != job:
                raise RemoteProtocolError(f"{where}: poll answered with an unexpected reply")
            if events.cursor != len(results) + len(events.results):
                raise RemoteProtocolError(f"{where}: poll cursor does not match its results")
            results.extend(events.results)
            if len(results) > _most_results(request):
                raise RemoteProtocolError(f"{where}: more results than requested modules")
            if events.done:
                return tuple(results)
        left = deadline - time.monotonic()
        if left <= 0:
            raise TargetTimeout(
                f"{where}: job {job} not finished in time; it keeps running in the agent "
                "(it completes or rolls back as a whole)"
            )
        events = poll(PollRequest(job, len(results), max(0.0, min(MAX_POLL_WAIT_S, left - 0.05))))


def _most_results(request: ReloadRequest | RollbackRequest) -> int:
    # one result per requested module, and per pushed module (loaded ones are reloaded too)
    pushed = request.push if isinstance(request, ReloadRequest) else ()
    return len(request.modules) + len(pushed)


def _older_agent(request: Request, reply: ErrorReply, where: str) -> Request:
    """The protocol-1 form of ``request`` for an agent that refused protocol 2, or the error
    that says why there is none (``reply`` is not a version refusal: it is raised as is)."""
    spoken = codec.spoken_versions(reply.message)
    if spoken is None or 1 not in spoken or codec.VERSION in spoken:
        raise _refused(where, reply)
    options = _protocol_2_options(request)
    if options:
        verb = "needs" if len(options) == 1 else "need"
        err = TargetRefused(
            "protocol",
            f"agent at {where} speaks protocol 1; {' and '.join(options)} {verb} an agent "
            f"that speaks protocol {codec.VERSION} (upgrade reloadctl where the agent runs)",
        )
        err.args = (err.message,)
        raise err
    if isinstance(request, StatusRequest):
        return request
    return replace(request, wait_s=0.0)


def _protocol_2_options(request: Request) -> list[str]:
    """The options of ``request`` that only protocol 2 carries (rule 3)."""
    if not isinstance(request, ReloadRequest):
        return []
    names = ["--verify"] if request.verify else []
    if request.push:  # push_trees, --write and --allow-new-top-level only come with it
        names.append("--push")
    return names
