"""The agent's rpyc server: authentication before rpyc, capped frames, bounded connections.

Rules:
1. Every accepted socket first passes our authenticator, in its own daemon thread named
   ``reloadctl-conn``: unix peers must have our uid or be root (``SO_PEERCRED``); then the
   HMAC handshake of ``proto.auth`` (mandatory on TCP, and on unix when a secret is set)
   completes within ``handshake_timeout_s`` in total, before rpyc reads a single byte.
2. A rejected socket is closed by us (rpyc 6.0.2 only shuts it down), and every failure is
   converted to rpyc's ``AuthenticationError`` so that nothing reaches
   ``threading.excepthook`` (the host's stderr).
3. After authentication rpyc reads through ``CappedChannel``: a frame longer than
   ``MAX_RPYC_FRAME`` or marked compressed drops the connection before any allocation or
   decompression (we never compress either); a frame must arrive whole within
   ``FRAME_DEADLINE_S`` of its first byte, and a reply write that blocks ``IO_TIMEOUT_S``
   ends the connection. An idle connection waits in poll() and never wakes up.
4. At most ``max_connections`` sockets are served at once and at most ``max_handshakes`` of
   them may still be in the handshake, at most half of those (``max_handshakes // 2``, at
   least 1) from one peer host, so one host cannot starve the others; an extra socket is
   closed at once, without a thread (over the connection cap) or right after its thread
   started (over a handshake cap). Refusals are logged at most once a second.
5. rpyc logs through ``reloadctl.agent.rpyc``; a connection that breaks in any way is logged
   and closed, never raised; the listener has no timeout (an idle agent never wakes up).
6. Failed authentications are rate limited per peer host (``agent.ratelimit``): while a
   host is locked out its new sockets are closed at accept, before any thread or handshake.
7. ``tls://``: the TLS handshake runs inside our authenticator, within the same deadline,
   with our own server ``SSLContext`` (``ssl.create_default_context`` purpose CLIENT_AUTH:
   TLS 1.2 minimum, the ssl module's default ciphers; ``CERT_REQUIRED`` with the CA when
   ``tls_ca`` is set). Our HMAC handshake then runs inside TLS: mode "hmac" with a secret,
   mode "none" without one, which the config allows only with client certificates
   (mutual TLS replaces the secret; TLS alone without a secret is refused).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable

from rpyc.core.channel import Channel
from rpyc.core.stream import SocketStream
from rpyc.utils.authenticators import AuthenticationError as RpycAuthenticationError
from rpyc.utils.server import ThreadedServer

from reloadctl.agent.config import AgentConfig
from reloadctl.agent.ratelimit import AuthFailureLimiter
from reloadctl.errors import AuthenticationError, RemoteProtocolError
from reloadctl.proto import auth, codec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

log = logging.getLogger(__name__)
rpyc_log = logging.getLogger("reloadctl.agent.rpyc")

#: rpyc wraps our byte payloads (brine + a request header): leave room for that.
MAX_RPYC_FRAME: Final = codec.MAX_MESSAGE_BYTES + 64 * 1024
#: Seconds a peer has to deliver the rest of a frame once it started one.
FRAME_DEADLINE_S: Final = 30.0
#: Socket timeout after the handshake: how often a stalled read re-checks its deadline, and
#: how long a reply write may block on a peer that does not read (then the connection ends).
IO_TIMEOUT_S: Final = 5.0
#: rpyc's timer for requests the agent itself sends (only its close); kept short so that a
#: peer that stops answering cannot hold a connection thread.
SYNC_REQUEST_TIMEOUT_S: Final = 3.0
_PEERCRED: Final = struct.Struct("3i")
_TOO_MANY_HANDSHAKES: Final = "too many pending handshakes"
_RETRY_ACCEPT: Final = frozenset(
    {errno.EINTR, errno.EAGAIN, errno.ECONNABORTED, errno.EPROTO, errno.EPERM}
)
_OUT_OF_FDS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def hardened_protocol_config() -> dict[str, Any]:
    """rpyc settings for the agent: nothing reachable but the two byte methods."""
    return {
        "allow_safe_attrs": False,
        "allow_exposed_attrs": False,
        "allow_public_attrs": False,
        "allow_all_attrs": False,
        "allow_getattr": True,  # only through the service's own _rpyc_getattr
        "allow_setattr": False,
        "allow_delattr": False,
        "allow_pickle": False,
        "include_local_traceback": False,
        "include_local_version": False,
        "import_custom_exceptions": False,
        "instantiate_custom_exceptions": False,
        "instantiate_oldstyle_exceptions": False,
        "propagate_SystemExit_locally": False,
        "propagate_KeyboardInterrupt_locally": False,
        "close_catchall": True,
        "sync_request_timeout": SYNC_REQUEST_TIMEOUT_S,
        "logger": rpyc_log,
    }


class CappedChannel(Channel):  # type: ignore[misc]
    """An rpyc channel that refuses oversized and compressed frames (rule 3)."""

    __slots__ = ()

    def __init__(self, stream: Any) -> None:
        super().__init__(stream, compress=False)

    def recv(self) -> bytes:
        # rpyc calls recv() once poll() saw data, so a whole frame must follow within
        # FRAME_DEADLINE_S: a peer that stalls mid-frame cannot hold the thread forever.
        deadline = time.monotonic() + FRAME_DEADLINE_S
        header = self._read_exact(self.FRAME_HEADER.size, deadline)
        length, compressed = self.FRAME_HEADER.unpack(header)
        if compressed:
            raise RemoteProtocolError("compressed rpyc frame refused")
        if length > MAX_RPYC_FRAME:
            raise RemoteProtocolError(f"rpyc frame of {length} bytes over {MAX_RPYC_FRAME}")
        return self._read_exact(length + len(self.FLUSHER), deadline)[: -len(self.FLUSHER)]

    def _read_exact(self, count: int, deadline: float) -> bytes:
        # EOF is reported as PeerClosed, not EOFError: on EOFError rpyc's serve() starts a
        # polite close that waits for the peer's reply (a half-closed peer could hold the
        # thread for the whole sync timeout); our serve loop closes at once instead.
        buf = bytearray()
        while len(buf) < count:
            try:
                chunk = self.stream.sock.recv(min(count - len(buf), 65536))
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise RemoteProtocolError("peer stalled in the middle of a frame") from None
                continue
            except (OSError, EOFError) as exc:  # EOFError: rpyc's ClosedFile after close()
                raise PeerClosed(str(exc) or "connection closed") from None
            if not chunk:
                raise PeerClosed("connection closed by peer")
            buf += chunk
        return bytes(buf)


class TlsSocketStream(SocketStream):  # type: ignore[misc]
    """A ``SocketStream`` over an ``SSLSocket``: decrypted bytes already buffered count as
    readable (poll() on the fd alone would sleep on them until the peer sent more)."""

    __slots__ = ()

    def poll(self, timeout: float | None) -> bool:
        if self.sock.pending():
            return True
        return bool(super().poll(timeout))


class PeerClosed(RemoteProtocolError):
    """The peer closed the connection (normal end of a session, or mid-frame)."""


def peer_host(sock: socket.socket) -> str:
    """The key a peer is rate limited by: its IP address, or ``unix uid N`` (so that another
    uid that fails cannot lock out our own clients)."""
    try:
        if sock.family == socket.AF_UNIX:
            return f"unix uid {peer_uid(sock)}"
        return str(sock.getpeername()[0])
    except OSError:
        return "?"


def server_tls_context(cert: str, key: str, ca: str | None) -> ssl.SSLContext:
    """The agent's TLS context (rule 7).

    Raises:
        OSError, ssl.SSLError: a file is missing or does not hold a usable cert/key/CA.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if ca is not None:
        ctx.load_verify_locations(cafile=ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    _pid, uid, _gid = _PEERCRED.unpack(raw)
    return int(uid)


def uid_allowed(uid: int) -> bool:
    """A unix peer may talk to us when it runs as our uid or as root."""
    return uid in (os.getuid(), 0)


def _recv_exact_until(sock: socket.socket, deadline: float) -> Callable[[int], bytes]:
    def recv_exact(n: int) -> bytes:
        chunks: list[bytes] = []
        remaining = n
        while remaining:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("handshake deadline passed")
            sock.settimeout(left)
            chunk = sock.recv(remaining)
            if not chunk:
                raise EOFError("peer closed during the handshake")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    return recv_exact


def _close_quietly(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class AgentServer(ThreadedServer):  # type: ignore[misc]
    """The rpyc server of one agent; construct with ``create_server``."""

    def __init__(
        self,
        config: AgentConfig,
        service_factory: Callable[[], Any],
        listener: socket.socket | None = None,
        **kwargs: Any,
    ) -> None:
        self.agent_config = config
        self._service_factory = service_factory
        self._slots = threading.BoundedSemaphore(config.max_connections)
        self._handshake_slots = threading.BoundedSemaphore(config.max_handshakes)
        self._per_host_handshakes = max(1, config.max_handshakes // 2)
        self._pending_lock = threading.Lock()
        self._pending: dict[str, int] = {}
        self._last_refusal_log = 0.0
        self._threads_lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._secret = None if config.secret is None else config.secret.reveal()
        self.failures = AuthFailureLimiter()
        self._tls: ssl.SSLContext | None = None
        if config.listen.scheme == "tls":
            assert config.tls_cert is not None and config.tls_key is not None
            self._tls = server_tls_context(config.tls_cert, config.tls_key, config.tls_ca)
        if listener is not None:
            self._adopt(service_factory, listener)
            return
        super().__init__(
            service_factory,
            authenticator=self._authenticate,
            protocol_config=hardened_protocol_config(),
            logger=rpyc_log,
            listener_timeout=None,
            **kwargs,
        )

    def _adopt(self, service_factory: Callable[[], Any], listener: socket.socket) -> None:
        # rpyc 6.0's Server.__init__ always binds a socket of its own. The lifecycle binds
        # in start() (errors raise at once, the address is known) and builds this server
        # later on the agent thread, so rpyc's attributes are set around that listener.
        self.active: Any = False
        self._closed: Any = False
        self.service: Any = service_factory
        self.authenticator: Any = self._authenticate
        self.backlog = socket.SOMAXCONN
        self.auto_register = False
        self.registrar = None
        self.protocol_config = hardened_protocol_config()
        self.clients: set[Any] = set()
        self.listener = listener
        name: Any = listener.getsockname()
        self.host: Any = "" if listener.family == socket.AF_UNIX else name[0]
        self.port: Any = name if listener.family == socket.AF_UNIX else name[1]
        self.logger = rpyc_log

    # -- accepting ---------------------------------------------------------------------

    def accept(self) -> None:
        """Accept one socket and hand it to a connection thread (replaces rpyc's loop body)."""
        while self.active:
            try:
                sock, _addr = self.listener.accept()
            except OSError as exc:
                if not self.active:
                    raise EOFError from None
                if exc.errno in _RETRY_ACCEPT:
                    continue
                if exc.errno in _OUT_OF_FDS:
                    log.warning("agent accept() failed (%s); pausing 100 ms", exc.strerror)
                    time.sleep(0.1)
                    continue
                log.error("agent listener failed: %s", exc)
                raise EOFError from None
            break
        else:
            return
        if not self.active:
            _close_quietly(sock)
            return
        sock.setblocking(True)
        host = peer_host(sock)
        if not self.failures.allowed(host):
            # rule 6: no thread, no handshake, no log line per socket (that would be a flood)
            _close_quietly(sock)
            return
        if not self._slots.acquire(blocking=False):
            self._log_refusal(f"{self.agent_config.max_connections} connections already open")
            _close_quietly(sock)
            return
        self.clients.add(sock)
        thread = threading.Thread(
            target=self._connection_thread, args=(sock,), name="reloadctl-conn", daemon=True
        )
        with self._threads_lock:
            self._threads.add(thread)
        try:
            thread.start()
        except BaseException:  # a failed thread start leaks nothing
            with self._threads_lock:
                self._threads.discard(thread)
            self.clients.discard(sock)
            self._slots.release()
            _close_quietly(sock)
            raise

    def _log_refusal(self, why: str) -> None:
        now = time.monotonic()
        if now - self._last_refusal_log >= 1.0:  # a flood must not flood the host's log
            self._last_refusal_log = now
            log.warning("agent refused connections: %s", why)

    def _connection_thread(self, sock: socket.socket) -> None:
        served = sock
        try:
            served = self._authenticate_and_serve_client(sock)
        except BaseException:  # rule 2: nothing reaches threading.excepthook
            log.exception("agent connection thread failed")
        finally:
            _close_quietly(served)
            _close_quietly(sock)
            self.clients.discard(served)
            self.clients.discard(sock)
            self._slots.release()
            with self._threads_lock:
                self._threads.discard(threading.current_thread())

    def _authenticate_and_serve_client(self, sock: socket.socket) -> socket.socket:
        """Authenticate and serve; return the socket that was served (TLS wraps ``sock``)."""
        host = peer_host(sock)
        try:
            sock2, credentials = self.authenticator(sock)
        except RpycAuthenticationError as exc:
            log.info("agent rejected a connection: %s", exc)
            # a full house is not the peer's failure; anything else is
            if str(exc) != _TOO_MANY_HANDSHAKES and self.failures.failed(host):
                log.warning(
                    "agent: too many failed authentications from %s; refusing its "
                    "connections for a while",
                    host,
                )
            return sock
        if sock2 is not sock:
            # TLS moved the fd into a new socket object: stop() must be able to close it
            self.clients.add(sock2)
            self.clients.discard(sock)
            if not self.active:
                return sock2  # type: ignore[no-any-return]
        self._serve_client(sock2, credentials)
        return sock2  # type: ignore[no-any-return]

    def _serve_client(self, sock: socket.socket, credentials: dict[str, Any]) -> None:
        peer = credentials.get("peer", "?")
        conn = None
        try:
            config = dict(
                self.protocol_config,
                credentials=credentials,
                endpoints=(sock.getsockname(), sock.getpeername()),
                logger=rpyc_log,
            )
            service = self._service_factory()
            stream = (
                TlsSocketStream(sock) if isinstance(sock, ssl.SSLSocket) else SocketStream(sock)
            )
            conn = service._connect(CappedChannel(stream), config)
            while not conn.closed:
                conn.serve(None)
        except PeerClosed:
            log.debug("agent: %s closed the connection", peer)
        except (RemoteProtocolError, EOFError, OSError) as exc:
            log.info("agent dropped connection from %s: %s", peer, exc)
        except Exception as exc:  # noqa: BLE001 - garbage from a peer must never escape
            log.warning("agent dropped connection from %s: %s: %s", peer, type(exc).__name__, exc)
        finally:
            # Shut the socket before rpyc's close(): its HANDLE_CLOSE then fails at once
            # instead of waiting for a reply that a hostile peer would never send.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # closing a broken connection
                    log.debug("error closing a connection", exc_info=True)

    # -- authentication (rule 1, 2) ------------------------------------------------------

    def _authenticate(self, sock: socket.socket) -> tuple[socket.socket, dict[str, Any]]:
        host = peer_host(sock)
        with self._pending_lock:
            pending = self._pending.get(host, 0)
            if pending >= self._per_host_handshakes:
                full = f"{pending} handshakes pending from {host}"
            elif not self._handshake_slots.acquire(blocking=False):
                full = f"{self.agent_config.max_handshakes} handshakes pending"
            else:
                full = ""
                self._pending[host] = pending + 1
        if full:
            self._log_refusal(full)
            _close_quietly(sock)
            raise RpycAuthenticationError(_TOO_MANY_HANDSHAKES)
        try:
            return self._handshake(sock)
        except RpycAuthenticationError:
            _close_quietly(sock)
            raise
        except Exception as exc:  # noqa: BLE001 - rule 2
            _close_quietly(sock)
            raise RpycAuthenticationError(f"{type(exc).__name__}: {exc}") from None
        finally:
            with self._pending_lock:
                left = self._pending[host] - 1
                if left:
                    self._pending[host] = left
                else:
                    del self._pending[host]
            self._handshake_slots.release()

    def _handshake(self, sock: socket.socket) -> tuple[socket.socket, dict[str, Any]]:
        deadline = time.monotonic() + self.agent_config.handshake_timeout_s
        if self._tls is None:
            return self._hmac_handshake(sock, deadline, "")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = self._tls_handshake(sock, deadline)
        try:
            return self._hmac_handshake(tls, deadline, _certificate_subject(tls))
        except BaseException:
            _close_quietly(tls)  # the caller only knows the detached plain socket
            raise

    def _hmac_handshake(
        self, sock: socket.socket, deadline: float, tls_peer: str
    ) -> tuple[socket.socket, dict[str, Any]]:
        if sock.family == socket.AF_UNIX:
            uid = peer_uid(sock)
            if not uid_allowed(uid):
                raise RpycAuthenticationError(f"unix peer uid {uid} is neither ours nor root")
            peer = f"unix uid {uid}"
        else:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            host, port = sock.getpeername()[:2]
            peer = f"{host}:{port}" + (f" ({tls_peer})" if tls_peer else "")
            # build_config refuses these; never serve TCP openly, TLS only with client certs
            if self._secret is None and not (self._tls is not None and self.agent_config.tls_ca):
                raise RpycAuthenticationError("tcp without a secret")
        handshake = auth.ServerHandshake(self._secret)
        recv_exact = _recv_exact_until(sock, deadline)
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.sendall(handshake.hello())
        try:
            welcome, session = handshake.respond(auth.read_frame(recv_exact))
        except AuthenticationError as exc:
            try:
                sock.settimeout(0.2)
                sock.sendall(auth.ServerHandshake.denied())
            except OSError:
                pass
            raise RpycAuthenticationError(f"{peer}: {exc}") from None
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.sendall(welcome)
        sock.settimeout(IO_TIMEOUT_S)
        return sock, {"peer": peer, "session": session}

    def _tls_handshake(self, sock: socket.socket, deadline: float) -> ssl.SSLSocket:
        assert self._tls is not None
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            # wrap_socket detaches sock: from here on only the SSLSocket owns the fd
            tls = self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except OSError as exc:
            raise RpycAuthenticationError(f"TLS setup failed: {exc}") from None
        try:
            # CPython applies a socket timeout to do_handshake() as one deadline for the
            # whole handshake, not per read (a trickling peer is cut at it; tested)
            tls.do_handshake()
        except (OSError, ValueError) as exc:
            _close_quietly(tls)
            reason = getattr(exc, "reason", None) or type(exc).__name__
            raise RpycAuthenticationError(f"TLS handshake failed: {reason}") from None
        return tls

    # -- shutdown --------------------------------------------------------------------------

    def connection_threads(self) -> list[threading.Thread]:
        """The connection threads still alive (for a bounded join at stop)."""
        with self._threads_lock:
            return [t for t in self._threads if t.is_alive()]


def _certificate_subject(sock: socket.socket) -> str:
    """``cn=<commonName>`` of a verified client certificate, or ``""``."""
    if not isinstance(sock, ssl.SSLSocket):
        return ""
    cert: Any = sock.getpeercert()
    if not cert:
        return ""
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return f"cn={value}"
    return "client certificate"


def create_server(
    config: AgentConfig,
    service_factory: Callable[[], Any],
    listener: socket.socket | None = None,
) -> AgentServer:
    """Bind the listener for ``config.listen`` (the caller prepared a unix socket's dir).

    A unix socket file is chmod 0600 after ``bind`` and before ``listen`` (the caller's
    ``_listen``): while its mode is still the umask's, nobody can connect to it.

    ``listener``: a socket the caller already bound (and chmod'ed) for ``config.listen``;
    the server serves it instead of binding its own.

    Raises:
        OSError: the address cannot be bound.
    """
    address = config.listen
    if listener is not None:
        return AgentServer(config, service_factory, listener=listener)
    if address.scheme == "unix":
        server = AgentServer(config, service_factory, socket_path=address.path)
        try:
            os.chmod(address.path, 0o600)
        except OSError:
            server.close()
            raise
        return server
    ipv6 = ":" in address.host
    return AgentServer(config, service_factory, hostname=address.host, port=address.port, ipv6=ipv6)
