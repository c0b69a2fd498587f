"""The agent's server: our own accept loop, authentication before rpyc, bounded connections.

rpyc is used only as the connection of each authenticated client (``reloadctl.transport``);
accepting, admitting and authenticating sockets is ours.

Rules:
1. ``serve_forever`` blocks in ``accept()`` on the listener it is given (no timeout: an idle
   agent never wakes up); ``close()`` shuts the listener down, which wakes it at once.
2. Every accepted socket is authenticated in its own daemon thread named ``reloadctl-conn``:
   unix peers must have our uid or be root (``SO_PEERCRED``); then the HMAC handshake of
   ``proto.auth`` (mandatory on TCP, and on unix when a secret is set) completes within
   ``handshake_timeout_s`` in total, before rpyc reads a single byte.
3. A rejected socket is closed by us, and nothing a peer does reaches
   ``threading.excepthook`` (the host's stderr): every failure is logged, never raised.
4. After authentication rpyc reads through the transport's capped channel (a frame must
   arrive whole within ``FRAME_DEADLINE_S`` of its first byte); a reply write that blocks
   ``IO_TIMEOUT_S`` ends the connection. An idle connection waits in poll() and never
   wakes up.
5. At most ``max_connections`` sockets are served at once and at most ``max_handshakes`` of
   them may still be in the handshake, at most half of those (``max_handshakes // 2``, at
   least 1) from one peer host, so one host cannot starve the others; an extra socket is
   closed at once, without a thread (over the connection cap) or right after its thread
   started (over a handshake cap). Refusals are logged at most once a second.
6. Failed authentications are rate limited per peer host (``agent.ratelimit``): while a
   host is locked out its new sockets are closed at accept, before any thread.
7. ``tls://``: the TLS handshake runs first, within the same deadline, with the agent's
   server context (``transport.server_tls_context``). Our HMAC handshake then runs inside
   TLS: mode "hmac" with a secret, mode "none" without one, which the config allows only
   with client certificates (mutual TLS replaces the secret; TLS alone without a secret is
   refused).
8. rpyc logs through ``reloadctl.agent.rpyc``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
import time

from reloadctl import transport
from reloadctl.agent.ratelimit import AuthFailureLimiter
from reloadctl.errors import AuthenticationError, RemoteProtocolError
from reloadctl.proto import auth

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable
    from typing import Any, Final

    from reloadctl.agent.config import AgentConfig

    _Authenticated = tuple[socket.socket, auth.Session, str]

log = logging.getLogger(__name__)
rpyc_log = logging.getLogger("reloadctl.agent.rpyc")

#: Seconds a peer has to deliver the rest of a frame once it started one.
FRAME_DEADLINE_S: Final = 30.0
#: Socket timeout after the handshake: how often a stalled read re-checks its deadline, and
#: how long a reply write may block on a peer that does not read (then the connection ends).
IO_TIMEOUT_S: Final = 5.0
#: rpyc's timer for requests the agent itself sends (only its close); kept short so that a
#: peer that stops answering cannot hold a connection thread.
SYNC_REQUEST_TIMEOUT_S: Final = 3.0
_RETRY_ACCEPT: Final = frozenset(
    {errno.EINTR, errno.EAGAIN, errno.ECONNABORTED, errno.EPROTO, errno.EPERM}
)
_OUT_OF_FDS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Rejected(Exception):
    """A socket that may not be served (closed by then). ``counts``: whether it is the
    peer's failure (rate limited), or only a full house."""

    def __init__(self, reason: str, *, counts: bool = True) -> None:
        super().__init__(reason)
        self.counts = counts


def peer_host(sock: socket.socket) -> str:
    """The key a peer is rate limited by: its IP address, or ``unix uid N`` (so that another
    uid that fails cannot lock out our own clients)."""
    try:
        if sock.family == socket.AF_UNIX:
            return f"unix uid {transport.peer_uid(sock)}"
        return str(sock.getpeername()[0])
    except OSError:
        return "?"


class AgentServer:
    """The server of one agent around a bound, listening socket.

    Args:
        config: the agent's settings (caps, handshake deadline, secret, TLS files).
        listener: the listening socket; the server closes it.
        service_factory: ``(session, peer) -> root`` for each authenticated client (the
            rpyc service instance of that connection).
        tls: the server TLS context for ``tls://`` (None otherwise).
    """

    def __init__(
        self,
        config: AgentConfig,
        listener: socket.socket,
        service_factory: Callable[[auth.Session, str], Any],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.listener = listener
        self.failures = AuthFailureLimiter()
        self._service_factory = service_factory
        self._tls = tls
        self._secret = None if config.secret is None else config.secret.reveal()
        self._closed = False
        self._slots = threading.BoundedSemaphore(config.max_connections)
        self._handshake_slots = threading.BoundedSemaphore(config.max_handshakes)
        self._per_host_handshakes = max(1, config.max_handshakes // 2)
        self._pending_lock = threading.Lock()
        self._pending: dict[str, int] = {}
        self._last_refusal_log = 0.0
        self._lock = threading.Lock()  # guards _sockets and _threads
        self._sockets: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        transport.preload()  # rpyc is imported here, on the thread that builds the server

    # -- accepting (rules 1, 5, 6) -----------------------------------------------------------

    def serve_forever(self) -> None:
        """Accept and admit sockets until ``close()``.

        Raises:
            OSError: the listener failed for good (logged).
        """
        while True:
            try:
                sock, _addr = self.listener.accept()
            except OSError as exc:
                if self._closed:
                    return
                if exc.errno in _RETRY_ACCEPT:
                    continue
                if exc.errno in _OUT_OF_FDS:
                    log.warning("agent accept() failed (%s); pausing 100 ms", exc.strerror)
                    time.sleep(0.1)
                    continue
                log.error("agent listener failed: %s", exc)
                raise
            if self._closed:
                transport.close_quietly(sock)
                return
            self._admit(sock)

    def _admit(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        if not self.failures.allowed(peer_host(sock)):
            # rule 6: no thread, no handshake, no log line per socket (that would be a flood)
            transport.close_quietly(sock)
            return
        if not self._slots.acquire(blocking=False):
            self._log_refusal(f"{self.config.max_connections} connections already open")
            transport.close_quietly(sock)
            return
        thread = threading.Thread(
            target=self._connection_thread, args=(sock,), name="reloadctl-conn", daemon=True
        )
        with self._lock:
            self._sockets.add(sock)
            self._threads.add(thread)
        try:
            thread.start()
        except BaseException:  # a failed thread start leaks nothing
            self._forget(sock, thread)
            raise

    def _forget(self, sock: socket.socket, thread: threading.Thread) -> None:
        transport.close_quietly(sock)
        with self._lock:
            self._sockets.discard(sock)
            self._threads.discard(thread)
        self._slots.release()

    def _log_refusal(self, why: str) -> None:
        now = time.monotonic()
        if now - self._last_refusal_log >= 1.0:  # a flood must not flood the host's log
            self._last_refusal_log = now
            log.warning("agent refused connections: %s", why)

    # -- one connection (rules 2-4) ------------------------------------------------------

    def _connection_thread(self, sock: socket.socket) -> None:
        served = sock
        host = peer_host(sock)  # before a rejection closes the socket
        try:
            served, session, peer = self._authenticate(sock, host)
            if served is not sock:
                # TLS moved the fd into a new socket object: close() must reach that one
                with self._lock:
                    self._sockets.discard(sock)
                    self._sockets.add(served)
            if not self._closed:
                self._serve(served, session, peer)
        except Rejected as exc:
            log.info("agent rejected a connection: %s", exc)
            if exc.counts and self.failures.failed(host):
                log.warning(
                    "agent: too many failed authentications from %s; refusing its "
                    "connections for a while",
                    host,
                )
        except BaseException:  # rule 3: nothing reaches threading.excepthook
            log.exception("agent connection thread failed")
        finally:
            transport.close_quietly(served)
            with self._lock:
                self._sockets.discard(served)
            self._forget(sock, threading.current_thread())

    def _serve(self, sock: socket.socket, session: auth.Session, peer: str) -> None:
        try:
            transport.serve_connection(
                sock,
                self._service_factory(session, peer),
                frame_deadline_s=FRAME_DEADLINE_S,
                config=transport.protocol_config(
                    sync_request_timeout=SYNC_REQUEST_TIMEOUT_S,
                    logger=rpyc_log,
                    interrupts_stay_local=False,
                ),
            )
        except transport.PeerClosed:
            log.debug("agent: %s closed the connection", peer)
        except (RemoteProtocolError, EOFError, OSError) as exc:
            log.info("agent dropped connection from %s: %s", peer, exc)
        except Exception as exc:  # noqa: BLE001 - garbage from a peer must never escape
            log.warning("agent dropped connection from %s: %s: %s", peer, type(exc).__name__, exc)

    # -- authentication (rules 2, 3, 5, 7) -------------------------------------------------

    def _authenticate(self, sock: socket.socket, host: str) -> _Authenticated:
        """The socket to serve (``sock``, or its TLS wrapper), its session and its peer.

        Raises:
            Rejected: the peer may not be served; the socket is closed.
        """
        with self._pending_lock:
            pending = self._pending.get(host, 0)
            if pending >= self._per_host_handshakes:
                full = f"{pending} handshakes pending from {host}"
            elif not self._handshake_slots.acquire(blocking=False):
                full = f"{self.config.max_handshakes} handshakes pending"
            else:
                full = ""
                self._pending[host] = pending + 1
        if full:
            self._log_refusal(full)
            transport.close_quietly(sock)
            raise Rejected("too many pending handshakes", counts=False)
        try:
            return self._handshake(sock)
        except Rejected:
            transport.close_quietly(sock)
            raise
        except Exception as exc:  # noqa: BLE001 - rule 3
            transport.close_quietly(sock)
            raise Rejected(f"{type(exc).__name__}: {exc}") from None
        finally:
            with self._pending_lock:
                left = self._pending[host] - 1
                if left:
                    self._pending[host] = left
                else:
                    del self._pending[host]
            self._handshake_slots.release()

    def _handshake(self, sock: socket.socket) -> _Authenticated:
        deadline = time.monotonic() + self.config.handshake_timeout_s
        if self._tls is None:
            return self._hmac_handshake(sock, deadline, "")
        transport.set_nodelay(sock)
        tls = self._tls_handshake(sock, deadline)
        try:
            return self._hmac_handshake(tls, deadline, _certificate_subject(tls))
        except BaseException:
            transport.close_quietly(tls)  # the caller only knows the detached plain socket
            raise

    def _hmac_handshake(
        self, sock: socket.socket, deadline: float, tls_peer: str
    ) -> _Authenticated:
        if sock.family == socket.AF_UNIX:
            uid = transport.peer_uid(sock)
            if not transport.uid_allowed(uid):
                raise Rejected(f"unix peer uid {uid} is neither ours nor root")
            peer = f"unix uid {uid}"
        else:
            transport.set_nodelay(sock)
            host, port = sock.getpeername()[:2]
            peer = f"{host}:{port}" + (f" ({tls_peer})" if tls_peer else "")
            # build_config refuses these; never serve TCP openly, TLS only with client certs
            if self._secret is None and not (self._tls is not None and self.config.tls_ca):
                raise Rejected("tcp without a secret")
        handshake = auth.ServerHandshake(self._secret)
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.sendall(handshake.hello())
        try:
            welcome, session = handshake.respond(
                auth.read_frame(transport.exact_reader(sock, deadline))
            )
        except AuthenticationError as exc:
            try:
                sock.settimeout(0.2)
                sock.sendall(auth.ServerHandshake.denied())
            except OSError:
                pass
            raise Rejected(f"{peer}: {exc}") from None
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.sendall(welcome)
        sock.settimeout(IO_TIMEOUT_S)
        return sock, session, peer

    def _tls_handshake(self, sock: socket.socket, deadline: float) -> ssl.SSLSocket:
        assert self._tls is not None
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            # wrap_socket detaches sock: from here on only the SSLSocket owns the fd
            tls = self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except OSError as exc:
            raise Rejected(f"TLS setup failed: {exc}") from None
        try:
            # CPython applies a socket timeout to do_handshake() as one deadline for the
            # whole handshake, not per read (a trickling peer is cut at it; tested)
            tls.do_handshake()
        except (OSError, ValueError) as exc:
            transport.close_quietly(tls)
            reason = getattr(exc, "reason", None) or type(exc).__name__
            raise Rejected(f"TLS handshake failed: {reason}") from None
        return tls

    # -- shutdown ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting (wakes ``serve_forever``) and end every connection; idempotent.
        Connection threads end on their own right after (see ``connection_threads``)."""
        self._closed = True
        transport.close_quietly(self.listener)
        with self._lock:
            socks = list(self._sockets)
        for sock in socks:
            transport.close_quietly(sock)

    def abandon(self) -> None:
        """Close this process's copies of the listener and connections without shutting
        them down (a forked child: the parent keeps serving them)."""
        self._closed = True
        for sock in [self.listener, *list(self._sockets)]:
            with contextlib.suppress(OSError):
                sock.close()

    def connection_threads(self) -> list[threading.Thread]:
        """The connection threads still alive (for a bounded join at stop)."""
        with self._lock:
            return [t for t in self._threads if t.is_alive()]


def _certificate_subject(sock: socket.socket) -> str:
    """``cn=<commonName>`` of a verified client certificate, or ``""``."""
    if not transport.is_tls(sock):
        return ""
    cert: Any = sock.getpeercert()  # type: ignore[attr-defined]
    if not cert:
        return ""
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return f"cn={value}"
    return "client certificate"
