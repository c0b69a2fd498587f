"""One request to one agent: connect (again, while a busy agent turns us away),
authenticate, hold the protocol conversation (``client.conversation``), close.

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
7. A tcp connect that is refused, or a connection the agent closes or resets before its
   hello (or, for tls://, before its TLS handshake; an agent whose pre-auth slots are full
   closes new sockets at once), is tried again after a pause (``CONNECT_RETRY_FIRST_S``
   doubling to ``CONNECT_RETRY_MAX_S``, jittered) while ``connect_timeout`` lasts; then
   it is ``TargetUnreachable``.
8. The rpyc root is requested right after our handshake proof, in the same flight
   (``transport.request_root``): the agent reads its handshake byte-exact, so the request
   waits for rpyc, and nothing the agent sends is read before its welcome verified.
"""

from __future__ import annotations

import os
import random
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from reloadctl import transport
from reloadctl.client.conversation import Call, converse
from reloadctl.errors import (
    AddressError,
    AuthenticationError,
    RemoteProtocolError,
    TargetAuthFailed,
    TargetRefused,
    TargetTimeout,
    TargetUnreachable,
)
from reloadctl.proto import auth
from reloadctl.proto.address import Address, format_address, parse_address
from reloadctl.proto.messages import AgentInfo, ReloadRequest, RollbackRequest, StatusRequest
from reloadctl.results import ModuleResult
from reloadctl.secrets import Secret

if TYPE_CHECKING:
    import ssl

#: rpyc's per-call timer sits this far above our own deadline (rule 2).
SYNC_TIMEOUT_MARGIN_S: Final = 5.0
#: How long past the caller's deadline one rpyc request may still wait for its answer.
CALL_MARGIN_S: Final = 0.5
#: Rule 7: first pause before another connect, doubled up to the max (with jitter).
CONNECT_RETRY_FIRST_S: Final = 0.05
CONNECT_RETRY_MAX_S: Final = 0.5

Request = ReloadRequest | RollbackRequest | StatusRequest


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
        # tcp: the agent may be restarting (rule 7); unix: nobody listens, a stale socket
        error = _Retryable if addr.scheme != "unix" else TargetUnreachable
        raise error(f"{where}: connection refused (is the agent running?)") from None
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
        ssl_mod = sys.modules["ssl"]
        if isinstance(exc, (ConnectionResetError, BrokenPipeError, ssl_mod.SSLEOFError)):
            # closed before a TLS word: a full agent, not a certificate problem (rule 7)
            raise _Retryable(f"{where}: the agent closed the connection") from None
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


class _Retryable(TargetUnreachable):
    """Refused, or closed/reset before the agent's hello: worth another try (rule 7)."""


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
    sock: socket.socket,
    addr: Address,
    secret: Secret | None,
    deadline: float,
    then: Callable[[], None] = lambda: None,
) -> auth.Session:
    where = format_address(addr)
    if addr.scheme == "unix":
        _check_agent_uid(sock, where)
    recv_exact = _recv_exact_until(sock, deadline, where)
    client = auth.ClientHandshake(
        None if secret is None else secret.reveal(), require_mac=addr.scheme == "tcp"
    )
    try:
        first = [recv_exact(1)]
    except TargetUnreachable as exc:  # closed or reset before a word: a full agent (rule 7)
        raise _Retryable(str(exc)) from None

    def hello_bytes(n: int) -> bytes:
        head = first.pop() if first else b""
        return head + recv_exact(n - len(head)) if n > len(head) else head

    try:
        hello = auth.read_frame(hello_bytes)
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"{where}: bad handshake from the agent: {exc}") from None
    try:
        proof = client.answer(hello)
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.sendall(proof)
        then()  # rule 8: sent before the agent's welcome is read, one round trip saved
        return client.finish(auth.read_frame(recv_exact))
    except AuthenticationError as exc:
        raise TargetAuthFailed(f"{where}: {exc}") from None
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"{where}: bad handshake from the agent: {exc}") from None
    except TimeoutError:
        raise TargetTimeout(f"{where}: the agent did not complete the handshake in time") from None
    except OSError as exc:
        raise TargetUnreachable(f"{where}: connection broke: {exc.strerror or exc}") from None


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
    connect_deadline = min(deadline, start + connect_timeout)
    pause = CONNECT_RETRY_FIRST_S
    while True:  # rule 7
        try:
            return _execute_once(
                addr,
                request,
                secret=secret,
                tls=tls,
                connect_deadline=connect_deadline,
                deadline=deadline,
                timeout=timeout,
            )
        except _Retryable as exc:
            if time.monotonic() + pause >= connect_deadline:
                raise TargetUnreachable(str(exc)) from None
            time.sleep(pause * (0.5 + random.random()))  # noqa: S311 - jitter, not crypto
            pause = min(pause * 2, CONNECT_RETRY_MAX_S)


def _execute_once(
    addr: Address,
    request: Request,
    *,
    secret: Secret | None,
    tls: TlsSettings | None,
    connect_deadline: float,
    deadline: float,
    timeout: float,
) -> AgentInfo | tuple[ModuleResult, ...]:
    where = format_address(addr)
    sock = _connect(addr, max(0.001, connect_deadline - time.monotonic()), tls)
    opened: list[tuple[Any, Callable[[], Any]]] = []

    def open_rpyc() -> None:  # rule 8
        opened.append(_open(sock, deadline=deadline, timeout=timeout))

    try:
        session = _handshake(sock, addr, secret, connect_deadline, then=open_rpyc)
        conn, root = opened[0]
        return _serve(sock, conn, root, session, request, deadline=deadline, where=where)
    finally:
        # rpyc's polite close would wait for a hung agent's reply: closed at once instead
        transport.close_connection(sock, opened[0][0] if opened else None)
        sock.close()


def _open(sock: socket.socket, *, deadline: float, timeout: float) -> tuple[Any, Callable[[], Any]]:
    """The rpyc connection over ``sock`` and the wait for its root, requested already."""
    # rpyc retries reads on a socket timeout; a write that stalls this long breaks the call.
    sock.settimeout(max(0.001, deadline - time.monotonic()) + SYNC_TIMEOUT_MARGIN_S)
    conn = transport.client_connection(sock, sync_request_timeout=timeout + SYNC_TIMEOUT_MARGIN_S)
    try:
        root = transport.request_root(conn, max(0.05, deadline - time.monotonic()) + CALL_MARGIN_S)
    except BaseException:
        transport.close_connection(sock, conn)
        raise
    return conn, root


def _serve(
    sock: socket.socket,
    conn: Any,
    pending_root: Callable[[], Any],
    session: auth.Session,
    request: Request,
    *,
    deadline: float,
    where: str,
) -> AgentInfo | tuple[ModuleResult, ...]:
    def arm() -> None:  # rule 2: no rpyc request outlives our deadline by much
        transport.set_request_timeout(conn, max(0.05, deadline - time.monotonic()) + CALL_MARGIN_S)

    try:
        arm()
        root = pending_root()
        submit = Call(transport.method_by_name(conn, "submit", root), session, where, arm)
        poll = Call(transport.method_by_name(conn, "poll", root), session, where, arm)
        return converse(submit, poll, request, deadline, where)
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
