"""One request to one agent: connect, authenticate, submit, poll until done, close.

The only client module that opens sockets; rpyc and the socket glue it shares with the
agent are ``reloadctl.transport``'s (rpyc is imported on the first call, so that ``--help``
and ``targets`` never pay for it).

Rules:
1. ``execute`` raises only ``TargetUnreachable`` (bad address, connect failed, connection
   broke), ``TargetTimeout`` (no handshake, or no final answer, before the deadline),
   ``TargetAuthFailed`` (our secret was rejected or missing, the agent could not prove it
   knows the secret, or a unix socket is served by another uid), ``TargetRefused`` (the
   agent answered ``ErrorReply``) and ``RemoteProtocolError`` (the agent sent something the
   protocol does not allow, including a sealed reply that does not verify).
2. ``connect_timeout`` bounds connect + handshake; ``timeout`` bounds the whole call,
   counted from its start: before each rpyc request its ``sync_request_timeout`` is set to
   the time left plus ``CALL_MARGIN_S``, so an agent that never answers (or a network
   that drops a reply) costs at most that much more.
3. Unix sockets: the agent's uid (``SO_PEERCRED``) must be ours or root. TCP: a MAC is
   required (no downgrade), TCP_NODELAY is set, compression is off both ways.
4. The socket is always closed before ``execute`` returns or raises.
5. The agent's replies are data only: anything but ``bytes`` from rpyc is refused unread.
6. ``tls://``: our own ``SSLContext`` (``ssl.create_default_context``: certificate verified
   against ``TlsSettings.ca`` or the system CAs, ``check_hostname`` on, TLS 1.2 minimum),
   an optional client certificate, TCP_NODELAY; the TLS handshake counts against
   ``connect_timeout``. A certificate that does not verify, or a TLS refusal (no or wrong
   client certificate), is ``TargetAuthFailed``. Inside TLS a MAC is not required (TLS
   protects the channel and identifies the agent); an agent that asks for the secret
   still gets the HMAC handshake. Settings: the ``tls`` argument only (the CLI reads its
   options and environment once, in ``client.settings``).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from reloadctl import transport
from reloadctl.errors import (
    AddressError,
    AuthenticationError,
    RemoteProtocolError,
    TargetAuthFailed,
    TargetRefused,
    TargetTimeout,
    TargetUnreachable,
)
from reloadctl.proto import auth, codec
from reloadctl.proto.address import Address, format_address, parse_address
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
from reloadctl.secrets import Secret

if TYPE_CHECKING:
    import ssl

#: Longest single long-poll; short enough that a dead agent is noticed by rpyc's timer.
MAX_POLL_WAIT_S: Final = 5.0
#: rpyc's per-call timer sits this far above our own deadline (rule 2).
SYNC_TIMEOUT_MARGIN_S: Final = 5.0
#: How long past the caller's deadline one rpyc request may still wait for its answer.
CALL_MARGIN_S: Final = 0.5


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Client TLS files (PEM paths): the CA that signed the agents' certificates (None: the
    system's CAs) and an optional client certificate with its key."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None


def client_tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """Our client context (rule 6).

    Raises:
        OSError, ssl.SSLError: a file is missing or unusable.
    """
    return transport.client_tls_context(tls.ca, tls.cert, tls.key)


def _tls_reason(exc: BaseException) -> str | None:
    """A one-line reason when ``exc`` is a TLS error (ssl is only loaded for tls://)."""
    ssl_mod = sys.modules.get("ssl")
    if ssl_mod is None or not isinstance(exc, ssl_mod.SSLError):
        return None
    verify = getattr(exc, "verify_message", None)
    if verify:
        return (
            f"TLS: the agent's certificate does not verify: {verify} (give the CA that "
            "signed it with --tls-ca or RELOADCTL_CLIENT_TLS_CA)"
        )
    reason = getattr(exc, "reason", None) or type(exc).__name__
    return f"TLS: {reason}"


def _connect(addr: Address, connect_timeout: float, tls: TlsSettings | None) -> socket.socket:
    where = format_address(addr)
    context = None
    if addr.scheme == "tls":
        try:
            context = client_tls_context(tls or TlsSettings())
        except OSError as exc:
            reason = _tls_reason(exc) or exc.strerror or str(exc)
            raise TargetUnreachable(f"{where}: cannot load the TLS files: {reason}") from None
    try:
        if addr.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(connect_timeout)
                sock.connect(addr.path)
            except BaseException:
                sock.close()
                raise
            return sock
        sock = socket.create_connection((addr.host, addr.port), timeout=connect_timeout)
    except FileNotFoundError:
        raise TargetUnreachable(f"{where}: no agent socket at {addr.path}") from None
    except ConnectionRefusedError:
        raise TargetUnreachable(f"{where}: connection refused (is the agent running?)") from None
    except PermissionError:
        raise TargetUnreachable(f"{where}: permission denied") from None
    except TimeoutError:
        raise TargetUnreachable(f"{where}: connect timed out after {connect_timeout:g} s") from None
    except socket.gaierror as exc:
        raise TargetUnreachable(f"{where}: cannot resolve host: {exc.strerror}") from None
    except OSError as exc:
        raise TargetUnreachable(f"{where}: cannot connect: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        sock.close()
        raise TargetUnreachable(f"{where}: connection broke while connecting") from None
    if context is None:
        return sock
    try:
        # wrap_socket detaches sock; on failure the TLS socket is the one to close
        tls_sock = context.wrap_socket(
            sock, server_hostname=addr.host, do_handshake_on_connect=False
        )
    except (OSError, ValueError) as exc:
        sock.close()
        raise TargetUnreachable(f"{where}: TLS setup failed: {exc}") from None
    try:
        tls_sock.do_handshake()
    except BaseException as exc:
        tls_sock.close()
        tls_reason = _tls_reason(exc)
        if tls_reason is not None:
            raise TargetAuthFailed(f"{where}: {tls_reason}") from None
        if isinstance(exc, TimeoutError):
            raise TargetTimeout(
                f"{where}: TLS handshake not done in {connect_timeout:g} s"
            ) from None
        if isinstance(exc, OSError):
            raise TargetUnreachable(f"{where}: connection broke during the TLS handshake") from None
        raise
    return tls_sock


def _check_agent_uid(sock: socket.socket, where: str) -> None:
    uid = transport.peer_uid(sock)
    if not transport.uid_allowed(uid):
        raise TargetAuthFailed(
            f"{where}: the socket is served by uid {uid}, not by you (uid {os.getuid()}) or "
            "root: refusing to talk to a possible impostor"
        )


def _recv_exact_until(sock: socket.socket, deadline: float, where: str) -> Callable[[int], bytes]:
    read = transport.exact_reader(sock, deadline)

    def recv_exact(n: int) -> bytes:
        try:
            return read(n)
        except TimeoutError:
            raise TargetTimeout(
                f"{where}: the agent did not complete the handshake in time"
            ) from None
        except EOFError:
            raise TargetUnreachable(f"{where}: the agent closed the connection") from None
        except OSError as exc:
            reason = _tls_reason(exc)
            if reason is not None:  # TLS 1.3: a refused client certificate shows here
                raise TargetAuthFailed(f"{where}: {reason}") from None
            raise TargetUnreachable(f"{where}: connection broke: {exc.strerror}") from None

    return recv_exact


def _handshake(
    sock: socket.socket, addr: Address, secret: Secret | None, deadline: float
) -> auth.Session:
    where = format_address(addr)
    if addr.scheme == "unix":
        _check_agent_uid(sock, where)
    recv_exact = _recv_exact_until(sock, deadline, where)
    client = auth.ClientHandshake(
        None if secret is None else secret.reveal(), require_mac=addr.scheme == "tcp"
    )
    try:
        proof = client.answer(auth.read_frame(recv_exact))
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.sendall(proof)
        return client.finish(auth.read_frame(recv_exact))
    except AuthenticationError as exc:
        raise TargetAuthFailed(f"{where}: {exc}") from None
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"{where}: bad handshake from the agent: {exc}") from None
    except TimeoutError:
        raise TargetTimeout(f"{where}: the agent did not complete the handshake in time") from None
    except OSError as exc:
        raise TargetUnreachable(f"{where}: connection broke: {exc.strerror or exc}") from None


class _Call:
    """Seal, send, receive, verify and decode one request over an rpyc method."""

    def __init__(
        self, method: Any, session: auth.Session, where: str, arm: Callable[[], None]
    ) -> None:
        self._method = method
        self._session = session
        self._where = where
        self._arm = arm

    def __call__(
        self, request: ReloadRequest | RollbackRequest | StatusRequest | PollRequest
    ) -> Reply:
        frame = self._session.seal(codec.encode(request))
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


def _converse(
    submit: _Call,
    poll: _Call,
    request: ReloadRequest | RollbackRequest | StatusRequest,
    deadline: float,
    where: str,
) -> AgentInfo | tuple[ModuleResult, ...]:
    reply = submit(request)
    if isinstance(reply, ErrorReply):
        raise _refused(where, reply)
    if isinstance(request, StatusRequest):
        if not isinstance(reply, AgentInfo):
            raise RemoteProtocolError(f"{where}: status answered with {type(reply).__name__}")
        return reply
    if not isinstance(reply, JobAccepted):
        raise RemoteProtocolError(f"{where}: submit answered with {type(reply).__name__}")
    job = reply.job
    results: list[ModuleResult] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TargetTimeout(
                f"{where}: job {job} not finished in time; it keeps running in the agent "
                "(it completes or rolls back as a whole)"
            )
        events = poll(PollRequest(job, len(results), max(0.0, min(MAX_POLL_WAIT_S, left - 0.05))))
        if isinstance(events, ErrorReply):
            raise _refused(where, events)
        if not isinstance(events, JobEvents) or events.job != job:
            raise RemoteProtocolError(f"{where}: poll answered with an unexpected reply")
        if events.cursor != len(results) + len(events.results):
            raise RemoteProtocolError(f"{where}: poll cursor does not match its results")
        results.extend(events.results)
        # one result per requested module at most (a push: per pushed module too)
        most = len(request.modules) + len(getattr(request, "push", ()))
        if len(results) > most:
            raise RemoteProtocolError(f"{where}: more results than requested modules")
        if events.done:
            return tuple(results)


def execute(
    address: str,
    request: ReloadRequest | RollbackRequest | StatusRequest,
    *,
    secret: Secret | None,
    connect_timeout: float,
    timeout: float,
    tls: TlsSettings | None = None,
) -> AgentInfo | tuple[ModuleResult, ...]:
    """Run ``request`` on the agent at ``address`` and return its answer.

    Args:
        address: an agent address (``unix:///p``, ``tcp://h:p``, ``host[:port]``).
        request: status (answered with ``AgentInfo``) or a reload/rollback (answered with
            one ``ModuleResult`` per module, in the agent's order).
        secret: the shared secret, or None (enough for a unix agent without one).
        connect_timeout: seconds for connect + handshake.
        timeout: seconds for the whole call, from now.
        tls: TLS files for ``tls://`` (default: the system's CAs, no client certificate).

    Raises:
        TargetUnreachable, TargetTimeout, TargetAuthFailed, TargetRefused,
        RemoteProtocolError: see rule 1.
    """
    start = time.monotonic()
    deadline = start + timeout
    try:
        addr = parse_address(address)
    except AddressError as exc:
        raise TargetUnreachable(str(exc)) from None
    where = format_address(addr)
    sock = _connect(addr, max(0.001, min(connect_timeout, timeout)), tls)
    try:
        handshake_deadline = min(deadline, time.monotonic() + connect_timeout)
        session = _handshake(sock, addr, secret, handshake_deadline)
        return _serve(sock, session, request, deadline=deadline, where=where, timeout=timeout)
    finally:
        sock.close()


def _serve(
    sock: socket.socket,
    session: auth.Session,
    request: ReloadRequest | RollbackRequest | StatusRequest,
    *,
    deadline: float,
    where: str,
    timeout: float,
) -> AgentInfo | tuple[ModuleResult, ...]:
    # rpyc retries reads on a socket timeout; a write that stalls this long breaks the call.
    sock.settimeout(max(0.001, deadline - time.monotonic()) + SYNC_TIMEOUT_MARGIN_S)
    conn = transport.client_connection(sock, sync_request_timeout=timeout + SYNC_TIMEOUT_MARGIN_S)

    def arm() -> None:  # rule 2: no rpyc request outlives our deadline by much
        transport.set_request_timeout(conn, max(0.05, deadline - time.monotonic()) + CALL_MARGIN_S)

    try:
        arm()
        submit = _Call(transport.method_by_name(conn, "submit"), session, where, arm)
        poll = _Call(transport.method_by_name(conn, "poll"), session, where, arm)
        return _converse(submit, poll, request, deadline, where)
    except (TargetAuthFailed, TargetRefused, TargetTimeout, TargetUnreachable, RemoteProtocolError):
        raise
    except TimeoutError:
        raise TargetTimeout(f"{where}: the agent did not answer in time") from None
    except (EOFError, OSError) as exc:
        raise TargetUnreachable(f"{where}: connection broke: {exc or type(exc).__name__}") from None
    except Exception as exc:  # noqa: BLE001 - rpyc raises the agent's exceptions as dynamic classes
        raise RemoteProtocolError(
            f"{where}: the agent raised {type(exc).__name__} instead of answering"
        ) from None
    except (SystemExit, GeneratorExit) as exc:
        # rpyc re-raises an agent's SystemExit here: an agent must not end the CLI
        raise RemoteProtocolError(
            f"{where}: the agent raised {type(exc).__name__} instead of answering"
        ) from None
    except KeyboardInterrupt:
        if threading.current_thread() is threading.main_thread():
            raise  # may be the user's Ctrl-C
        raise RemoteProtocolError(
            f"{where}: the agent raised KeyboardInterrupt instead of answering"
        ) from None
    finally:
        # rpyc's polite close would wait for a hung agent's reply: closed at once instead
        transport.close_connection(sock, conn)
