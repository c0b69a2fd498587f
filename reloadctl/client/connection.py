"""One request to one agent: connect, authenticate, submit, poll until done, close.

This is the only client module that touches sockets or rpyc (imported lazily, inside
``execute``, so that ``--help`` and ``targets`` never pay for it).

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
   still gets the HMAC handshake. Settings: the ``tls`` argument, else ``RELOADCTL_TLS_CA``,
   ``RELOADCTL_TLS_CERT``, ``RELOADCTL_TLS_KEY``.
7. A tcp connect that is refused, or a connection the agent closes or resets before its hello
   (or, for tls://, before its TLS handshake)
   (an agent whose pre-auth slots are full closes new sockets at once), is tried again
   after a pause (``CONNECT_RETRY_FIRST_S`` doubling to ``CONNECT_RETRY_MAX_S``, jittered)
   while ``connect_timeout`` lasts; then it is ``TargetUnreachable``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

from reloadctl.errors import (
    AddressError,
    AuthenticationError,
    LocalProtocolError,
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
#: Largest rpyc frame accepted from an agent: one reply plus rpyc's own framing.
MAX_RPYC_FRAME: Final = codec.MAX_MESSAGE_BYTES + 64 * 1024
#: rpyc's per-call timer sits this far above our own deadline (rule 2).
SYNC_TIMEOUT_MARGIN_S: Final = 5.0
#: How long past the caller's deadline one rpyc request may still wait for its answer.
CALL_MARGIN_S: Final = 0.5
#: Rule 7: first pause before another connect, doubled up to the max (with jitter).
CONNECT_RETRY_FIRST_S: Final = 0.05
CONNECT_RETRY_MAX_S: Final = 0.5
_PEERCRED: Final = struct.Struct("3i")
TLS_CA_ENV: Final = "RELOADCTL_TLS_CA"
TLS_CERT_ENV: Final = "RELOADCTL_TLS_CERT"
TLS_KEY_ENV: Final = "RELOADCTL_TLS_KEY"


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Client TLS files (PEM paths): the CA that signed the agents' certificates (None: the
    system's CAs) and an optional client certificate with its key."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None


def tls_settings(environ: Mapping[str, str] | None = None) -> TlsSettings:
    """``RELOADCTL_TLS_CA``/``_CERT``/``_KEY`` from the environment (unset: None)."""
    env = os.environ if environ is None else environ
    return TlsSettings(
        ca=env.get(TLS_CA_ENV, "").strip() or None,
        cert=env.get(TLS_CERT_ENV, "").strip() or None,
        key=env.get(TLS_KEY_ENV, "").strip() or None,
    )


def client_tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """Our client context (rule 6).

    Raises:
        OSError, ssl.SSLError: a file is missing or unusable.
    """
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert is not None:
        ctx.load_cert_chain(tls.cert, tls.key)
    return ctx


def _tls_reason(exc: BaseException) -> str | None:
    """A one-line reason when ``exc`` is a TLS error (ssl is only loaded for tls://)."""
    ssl_mod = sys.modules.get("ssl")
    if ssl_mod is None or not isinstance(exc, ssl_mod.SSLError):
        return None
    verify = getattr(exc, "verify_message", None)
    if verify:
        return (
            f"TLS: the agent's certificate does not verify: {verify} (give the CA that "
            "signed it with --tls-ca or RELOADCTL_TLS_CA)"
        )
    reason = getattr(exc, "reason", None) or type(exc).__name__
    return f"TLS: {reason}"


def _client_protocol_config(timeout: float) -> dict[str, Any]:
    return {
        "allow_safe_attrs": False,
        "allow_exposed_attrs": False,
        "allow_public_attrs": False,
        "allow_all_attrs": False,
        "allow_setattr": False,
        "allow_delattr": False,
        "allow_pickle": False,
        "include_local_traceback": False,
        "include_local_version": False,
        "import_custom_exceptions": False,
        "instantiate_custom_exceptions": False,
        "close_catchall": True,
        "sync_request_timeout": timeout + SYNC_TIMEOUT_MARGIN_S,
    }


def _capped_channel(stream: Any) -> Any:
    """An rpyc channel that never compresses and refuses compressed or oversized frames.

    The agent is authenticated by then, but a reply must still not be able to make the CLI
    allocate without bound (rpyc trusts a 32-bit length and inflates zlib without limit).
    """
    return _capped_channel_class()(stream, compress=False)


@functools.cache  # rpyc is imported on first use; the class is built once per process
def _capped_channel_class() -> Any:
    from rpyc.core.channel import Channel

    class CappedChannel(Channel):  # type: ignore[misc]
        __slots__ = ()

        def recv(self) -> bytes:
            header = self.stream.read(self.FRAME_HEADER.size)
            length, compressed = self.FRAME_HEADER.unpack(header)
            if compressed or length > MAX_RPYC_FRAME:
                raise RemoteProtocolError("the agent sent a compressed or oversized frame")
            data: bytes = self.stream.read(length + len(self.FLUSHER))
            return data[: -len(self.FLUSHER)]

    return CappedChannel


def _socket_stream(sock: socket.socket) -> Any:
    """rpyc's ``SocketStream``; over TLS, buffered decrypted bytes count as readable."""
    from rpyc.core.stream import SocketStream

    if sys.modules.get("ssl") is None or not isinstance(sock, sys.modules["ssl"].SSLSocket):
        return SocketStream(sock)
    return _tls_stream_class()(sock)


@functools.cache
def _tls_stream_class() -> Any:
    from rpyc.core.stream import SocketStream

    class TlsSocketStream(SocketStream):  # type: ignore[misc]
        __slots__ = ()

        def poll(self, timeout: float | None) -> bool:
            if self.sock.pending():
                return True
            return bool(super().poll(timeout))

    return TlsSocketStream


def _connect(addr: Address, connect_timeout: float, tls: TlsSettings | None) -> socket.socket:
    where = format_address(addr)
    context = None
    if addr.scheme == "tls":
        try:
            context = client_tls_context(tls or tls_settings())
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
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    _pid, uid, _gid = _PEERCRED.unpack(raw)
    if uid not in (os.getuid(), 0):
        raise TargetAuthFailed(
            f"{where}: the socket is served by uid {uid}, not by you (uid {os.getuid()}) or "
            "root: refusing to talk to a possible impostor"
        )


def _recv_exact_until(sock: socket.socket, deadline: float, where: str) -> Callable[[int], bytes]:
    def recv_exact(n: int) -> bytes:
        chunks: list[bytes] = []
        remaining = n
        while remaining:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TargetTimeout(f"{where}: the agent did not complete the handshake in time")
            sock.settimeout(left)
            try:
                chunk = sock.recv(remaining)
            except TimeoutError:
                continue
            except OSError as exc:
                reason = _tls_reason(exc)
                if reason is not None:  # TLS 1.3: a refused client certificate shows here
                    raise TargetAuthFailed(f"{where}: {reason}") from None
                raise TargetUnreachable(f"{where}: connection broke: {exc.strerror}") from None
            if not chunk:
                raise TargetUnreachable(f"{where}: the agent closed the connection")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

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
        then()  # sent before the agent's welcome is read: pipelined, one round trip saved
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

    #: The protocol version requests are sent in (lowered once for an older agent).
    version: int = codec.VERSION

    def __call__(
        self, request: ReloadRequest | RollbackRequest | StatusRequest | PollRequest
    ) -> Reply:
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


def _converse(
    submit: _Call,
    poll: _Call,
    request: ReloadRequest | RollbackRequest | StatusRequest,
    deadline: float,
    where: str,
) -> AgentInfo | tuple[ModuleResult, ...]:
    if not isinstance(request, StatusRequest) and request.wait_s == 0:
        # protocol 2: a job that finishes within the wait comes back in the submit reply
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
            if len(results) > len(request.modules):  # one result per requested module at most
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


def _older_agent(
    request: ReloadRequest | RollbackRequest | StatusRequest, reply: ErrorReply, where: str
) -> ReloadRequest | RollbackRequest | StatusRequest:
    """The protocol-1 form of ``request`` for an agent that refused protocol 2, or the error
    that says why there is none (``reply`` is not a version refusal: it is raised as is)."""
    spoken = codec.spoken_versions(reply.message)
    if spoken is None or 1 not in spoken or codec.VERSION in spoken:
        raise _refused(where, reply)
    if isinstance(request, ReloadRequest) and request.verify:
        err = TargetRefused(
            "protocol",
            f"agent at {where} speaks protocol 1; --verify needs an agent that speaks "
            f"protocol {codec.VERSION} (upgrade reloadctl where the agent runs)",
        )
        err.args = (err.message,)
        raise err
    if isinstance(request, StatusRequest):
        return request
    return replace(request, wait_s=0.0)


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
        tls: TLS files for ``tls://`` (default: ``tls_settings()``, from the environment).

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
    request: ReloadRequest | RollbackRequest | StatusRequest,
    *,
    secret: Secret | None,
    tls: TlsSettings | None,
    connect_deadline: float,
    deadline: float,
    timeout: float,
) -> AgentInfo | tuple[ModuleResult, ...]:
    where = format_address(addr)
    sock = _connect(addr, max(0.001, connect_deadline - time.monotonic()), tls)
    opened: list[Any] = []
    try:
        handshake_deadline = connect_deadline
        session = _handshake(
            sock,
            addr,
            secret,
            handshake_deadline,
            then=lambda: opened.append(_open(sock, deadline=deadline, timeout=timeout)),
        )
        return _serve(sock, opened[0], session, request, deadline=deadline, where=where)
    finally:
        if opened:  # closed by _serve already, unless the handshake failed after _open
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            opened[0][0].close()
        sock.close()


# -- fewer rpyc round trips (performance; see benchmarks/fleet.py) ---------------------------


@functools.cache
def _by_name_client() -> Any:
    """The client-side rpyc service: its connection never sends ``HANDLE_INSPECT``.

    rpyc asks the peer to list a remote class's methods the first time it sees one of its
    objects, to build a proxy class. We only call the agent root's two byte methods by
    name (``_by_name``), so a bare proxy holding the root's id is all we need: a reload is
    3 rpyc round trips (GETROOT, CALLATTR submit, CALLATTR poll) instead of 6 (GETROOT,
    INSPECT, GETATTR, CALL, GETATTR, CALL), and the agent never builds the method list.
    """
    from rpyc.core import netref
    from rpyc.core.protocol import Connection
    from rpyc.core.service import VoidService

    class ByNameConnection(Connection):  # type: ignore[misc]
        def _netref_factory(self, id_pack: Any) -> Any:
            return netref.BaseNetref(self, id_pack)

    class ByNameClient(VoidService):  # type: ignore[misc]
        __slots__ = ()
        _protocol = ByNameConnection

    return ByNameClient


def _by_name(conn: Any, root: Any, name: str) -> Callable[[bytes], object]:
    """``root.<name>(frame)`` in one round trip (``HANDLE_CALLATTR``); the agent checks the
    name exactly as for a getattr (its ``_rpyc_getattr``)."""
    from rpyc.core import consts

    def call(frame: bytes) -> object:
        return conn.sync_request(consts.HANDLE_CALLATTR, root, name, (frame,), ())

    return call


def _open(sock: socket.socket, *, deadline: float, timeout: float) -> tuple[Any, Any]:
    """The rpyc connection over ``sock`` and its GETROOT request, already sent.

    Called as soon as our handshake proof is out: the GETROOT frame follows the proof in the
    same flight, and the agent answers it right after its welcome (it reads the handshake
    byte-exact, so the frame waits for rpyc). Nothing the agent sends is read before its
    welcome verified; a GETROOT carries no data. The reply is read by ``_serve``.
    """
    from rpyc.core import consts
    from rpyc.utils.factory import connect_channel

    # rpyc retries reads on a socket timeout; a write that stalls this long breaks the call.
    sock.settimeout(max(0.001, deadline - time.monotonic()) + SYNC_TIMEOUT_MARGIN_S)
    conn = connect_channel(
        _capped_channel(_socket_stream(sock)),
        service=_by_name_client(),
        config=_client_protocol_config(timeout),
    )
    try:
        pending = conn.async_request(
            consts.HANDLE_GETROOT, timeout=max(0.05, deadline - time.monotonic()) + CALL_MARGIN_S
        )
    except BaseException:
        conn.close()
        raise
    return conn, pending


def _serve(
    sock: socket.socket,
    opened: tuple[Any, Any],
    session: auth.Session,
    request: ReloadRequest | RollbackRequest | StatusRequest,
    *,
    deadline: float,
    where: str,
) -> AgentInfo | tuple[ModuleResult, ...]:
    conn, pending_root = opened

    def arm() -> None:  # rule 2: no rpyc request outlives our deadline by much
        conn._config["sync_request_timeout"] = (
            max(0.05, deadline - time.monotonic()) + CALL_MARGIN_S
        )

    try:
        arm()
        root = pending_root.value
        submit = _Call(_by_name(conn, root, "submit"), session, where, arm)
        poll = _Call(_by_name(conn, root, "poll"), session, where, arm)
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
        # Shut the socket first: rpyc's polite close waits for a reply, and a hung agent
        # would hold us for the whole sync timeout. A shut socket makes close() immediate.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        conn.close()
