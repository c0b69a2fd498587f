"""The one place that knows rpyc internals and raw sockets, for the agent and the client alike.

Rules:
1. rpyc is imported on first use (inside the functions below), never when this module is
   imported: the CLI's ``--help`` and an agent that no client contacted never load it.
2. Every rpyc connection reads through a *capped channel*: a frame whose 5-byte header
   declares more than its cap (``max_rpyc_frame()`` for the client, which only receives
   replies; ``max_served_frame()`` for the agent, whose largest request is a push), or
   marks it compressed, is refused from the header alone, before rpyc allocates or
   inflates anything (rpyc trusts a 32-bit length and decompresses without limit); we
   never compress either. With a
   ``frame_deadline_s`` (the agent), a started frame must arrive whole within that many
   seconds, and a peer that closes or breaks raises ``PeerClosed`` (rpyc's ``EOFError``
   would start a polite close that waits for a reply). Without one (the client), rpyc's
   own stream reads (``EOFError`` when the agent goes away).
3. Over TLS, decrypted bytes already buffered in the ``SSLSocket`` count as readable
   (``poll()`` on the fd alone would sleep on them until the peer sent more).
4. ``protocol_config`` is the one locked-down rpyc configuration: no pickle, no attribute
   but what the root's own ``_rpyc_getattr`` allows, no local tracebacks or versions sent,
   no custom exceptions instantiated, an agent's ``SystemExit`` never ends the client.
   The two sides differ only in its parameters.
5. The client calls the agent root's methods by name (``HANDLE_CALLATTR``): its
   connections never ask the agent to list a class's methods. Its GETROOT may be sent
   before the agent's handshake welcome is read (``request_root``), in the same flight as
   the handshake proof: the root costs no round trip of its own, and a reload that ends
   within the submit's wait is one rpyc round trip (protocol 2 carries the job's results).
6. Unix peers are identified by ``SO_PEERCRED``; ours or root is allowed.
7. TLS contexts: TLS 1.2 minimum and the ssl module's default ciphers on both sides; the
   agent's asks for client certificates (``CERT_REQUIRED``) when it is given a CA.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import struct
import sys
import time

from reloadctl.errors import RemoteProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable
    from typing import Any, Final

log = logging.getLogger(__name__)

#: rpyc wraps our byte payloads (brine + a request header): room for that above a message.
RPYC_FRAME_OVERHEAD: Final = 64 * 1024
_PEERCRED: Final = struct.Struct("3i")


class PeerClosed(RemoteProtocolError):
    """The peer closed the connection (the normal end of a session, or mid-frame)."""


# -- raw sockets ---------------------------------------------------------------------------


def recv_exact(sock: socket.socket, count: int, deadline: float, *, own_timeout: bool) -> bytes:
    """Read exactly ``count`` bytes from ``sock`` before ``deadline`` (``time.monotonic``).

    ``own_timeout``: set the socket's timeout to the time left before each read (the
    handshake); otherwise the socket keeps its timeout and the deadline is checked each
    time a read times out (a served connection, whose writes use the same timeout).

    Raises:
        TimeoutError: the deadline passed first.
        EOFError: the peer closed the connection.
        OSError: the socket failed (``ssl.SSLError`` included).
    """
    chunks: list[bytes] = []
    remaining = count
    while remaining:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"deadline passed with {remaining} of {count} bytes unread")
        if own_timeout:
            sock.settimeout(left)
        try:
            chunk = sock.recv(min(remaining, 65536))
        except TimeoutError:
            continue  # the loop decides whether the deadline passed
        if not chunk:
            raise EOFError("connection closed by peer")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def exact_reader(sock: socket.socket, deadline: float) -> Callable[[int], bytes]:
    """``recv_exact`` with its own timeouts, as the reader ``proto.auth.read_frame`` takes."""
    return functools.partial(recv_exact, sock, deadline=deadline, own_timeout=True)


def close_quietly(sock: Any) -> None:
    """Shut down and close ``sock``, ignoring a socket that is already gone."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def set_nodelay(sock: socket.socket) -> None:
    """TCP_NODELAY on a TCP socket (rpyc sets it on neither end; without it a frame's
    trailing newline waits for Nagle and delayed ACK); nothing on a unix socket."""
    if sock.family != socket.AF_UNIX:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    _pid, uid, _gid = _PEERCRED.unpack(raw)
    return int(uid)


def uid_allowed(uid: int) -> bool:
    """A unix peer may talk to us when it runs as our uid or as root (rule 6)."""
    return uid in (os.getuid(), 0)


# -- TLS -----------------------------------------------------------------------------------


def server_tls_context(cert: str, key: str, ca: str | None) -> ssl.SSLContext:
    """The agent's TLS context (rule 7).

    Raises:
        OSError, ssl.SSLError: a file is missing or does not hold a usable cert/key/CA.
    """
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if ca is not None:
        ctx.load_verify_locations(cafile=ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_tls_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """The client's TLS context (rule 7): the agent's certificate verified against ``ca``
    (None: the system's CAs) with ``check_hostname``; an optional client certificate.

    Raises:
        OSError, ssl.SSLError: a file is missing or unusable.
    """
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def is_tls(sock: object) -> bool:
    """True for an ``ssl.SSLSocket`` (without importing ssl where it is not loaded)."""
    ssl_mod = sys.modules.get("ssl")
    return ssl_mod is not None and isinstance(sock, ssl_mod.SSLSocket)


# -- rpyc ----------------------------------------------------------------------------------


def max_rpyc_frame() -> int:
    """The largest rpyc frame the client accepts: one message plus rpyc's framing."""
    from reloadctl.proto import codec

    return codec.MAX_MESSAGE_BYTES + RPYC_FRAME_OVERHEAD


def max_served_frame() -> int:
    """The largest rpyc frame the agent accepts (post-auth only): a push, the largest
    message (``codec.MAX_PUSH_MESSAGE_BYTES`` says why not chunks), plus rpyc's framing.
    The codec still caps every other message at ``codec.MAX_MESSAGE_BYTES``."""
    from reloadctl.proto import codec

    return codec.MAX_PUSH_MESSAGE_BYTES + RPYC_FRAME_OVERHEAD


def protocol_config(
    *, sync_request_timeout: float, logger: logging.Logger | None, interrupts_stay_local: bool
) -> dict[str, Any]:
    """The locked-down rpyc configuration (rule 4).

    Args:
        sync_request_timeout: seconds an rpyc request this side sends waits for its reply.
        logger: where rpyc logs (None: it does not).
        interrupts_stay_local: a ``KeyboardInterrupt`` raised while this side serves a
            request ends this side (the CLI: the user's Ctrl-C) rather than being sent to
            the peer (the agent: a reloaded module's interrupt must not end the thread).
    """
    return {
        "allow_safe_attrs": False,
        "allow_exposed_attrs": False,
        "allow_public_attrs": False,
        "allow_all_attrs": False,
        "allow_getattr": True,  # only through the root's own _rpyc_getattr
        "allow_setattr": False,
        "allow_delattr": False,
        "allow_pickle": False,
        "include_local_traceback": False,
        "include_local_version": False,
        "import_custom_exceptions": False,
        "instantiate_custom_exceptions": False,
        "instantiate_oldstyle_exceptions": False,
        "propagate_SystemExit_locally": False,
        "propagate_KeyboardInterrupt_locally": interrupts_stay_local,
        "close_catchall": True,
        "sync_request_timeout": sync_request_timeout,
        "logger": logger,
    }


@functools.cache  # rpyc is imported on first use (rule 1); the classes are built once
def _rpyc() -> Any:
    from rpyc.core import consts, netref
    from rpyc.core.channel import Channel
    from rpyc.core.protocol import Connection
    from rpyc.core.service import VoidService
    from rpyc.core.stream import SocketStream

    class CappedChannel(Channel):  # type: ignore[misc]
        """Rule 2."""

        __slots__ = ("frame_deadline_s", "limit")

        def __init__(self, stream: Any, frame_deadline_s: float | None, limit: int) -> None:
            super().__init__(stream, compress=False)
            self.frame_deadline_s = frame_deadline_s
            self.limit = limit

        def recv(self) -> bytes:
            # rpyc calls recv() once poll() saw data, so a whole frame follows or the
            # peer is stalling (or hostile)
            read = self.stream.read
            if self.frame_deadline_s is not None:
                read = functools.partial(self._read, time.monotonic() + self.frame_deadline_s)
            length, compressed = self.FRAME_HEADER.unpack(read(self.FRAME_HEADER.size))
            limit = self.limit
            if compressed or length > limit:
                raise RemoteProtocolError(
                    f"compressed or oversized rpyc frame refused ({length} bytes"
                    f"{', compressed' if compressed else ''}; at most {limit}, uncompressed)"
                )
            data: bytes = read(length + len(self.FLUSHER))
            return data[: -len(self.FLUSHER)]

        def _read(self, deadline: float, count: int) -> bytes:
            try:
                return recv_exact(self.stream.sock, count, deadline, own_timeout=False)
            except TimeoutError:
                raise RemoteProtocolError("peer stalled in the middle of a frame") from None
            except (OSError, EOFError) as exc:  # EOFError: rpyc's ClosedFile after close()
                raise PeerClosed(str(exc) or "connection closed") from None

    class TlsSocketStream(SocketStream):  # type: ignore[misc]
        """Rule 3."""

        __slots__ = ()

        def poll(self, timeout: float | None) -> bool:
            if self.sock.pending():
                return True
            return bool(super().poll(timeout))

    class QuietNetref(netref.BaseNetref):  # type: ignore[misc]
        # Released on a closed connection, a netref would still encode a DEL request that
        # the closed channel can only refuse (about 5% of a client's CPU per target).
        __slots__ = ()

        def __del__(self) -> None:
            if not object.__getattribute__(self, "____conn__").closed:
                super().__del__()

    class ByNameConnection(Connection):  # type: ignore[misc]
        # Rule 5: a bare proxy holding the root's id is all the client needs; rpyc would
        # otherwise ask the agent for the root class's method list (HANDLE_INSPECT).
        def _netref_factory(self, id_pack: Any) -> Any:
            return QuietNetref(self, id_pack)

    class ByNameClient(VoidService):  # type: ignore[misc]
        __slots__ = ()
        _protocol = ByNameConnection

    class Rpyc:
        channel = CappedChannel
        plain_stream = SocketStream
        tls_stream = TlsSocketStream
        client_service = ByNameClient
        callattr = consts.HANDLE_CALLATTR
        getroot = consts.HANDLE_GETROOT

    return Rpyc


def preload() -> None:
    """Import rpyc and build our classes now (the agent does it on the thread that builds
    its server, where a fork waits for it; the client on its first connection)."""
    _rpyc()


def capped_channel(
    sock: socket.socket, frame_deadline_s: float | None, limit: int | None = None
) -> Any:
    """The rpyc channel over ``sock`` (plain or TLS) that rule 2 describes; its ``recv()``
    returns one frame's bytes, of at most ``limit`` (default: ``max_rpyc_frame()``)."""
    rpyc = _rpyc()
    stream = rpyc.tls_stream(sock) if is_tls(sock) else rpyc.plain_stream(sock)
    return rpyc.channel(stream, frame_deadline_s, max_rpyc_frame() if limit is None else limit)


def serve_connection(
    sock: socket.socket, root: Any, *, frame_deadline_s: float, config: dict[str, Any]
) -> None:
    """Serve rpyc requests for ``root`` on the authenticated ``sock`` until the peer goes;
    its frames may be as large as ``max_served_frame()`` (rule 2).

    The connection is closed on return (the socket shut down first, so that rpyc's polite
    close does not wait for an answer a hostile peer would never send); ``sock`` itself is
    the caller's to close.

    Raises:
        PeerClosed: the peer closed the connection (the normal end).
        RemoteProtocolError: a refused frame (rule 2).
        EOFError, OSError, Exception: whatever else rpyc raised on the peer's input.
    """
    conn = None
    try:
        conn = root._connect(capped_channel(sock, frame_deadline_s, max_served_frame()), config)
        while not conn.closed:
            conn.serve(None)
    finally:
        close_connection(sock, conn)


def client_connection(sock: socket.socket, *, sync_request_timeout: float) -> Any:
    """An rpyc connection on the authenticated ``sock`` for calls by name (rule 5)."""
    return _rpyc().client_service._connect(
        capped_channel(sock, None),
        protocol_config(
            sync_request_timeout=sync_request_timeout, logger=None, interrupts_stay_local=True
        ),
    )


def set_request_timeout(conn: Any, seconds: float) -> None:
    """How long the next rpyc requests of ``conn`` wait for their replies."""
    conn._config["sync_request_timeout"] = seconds


def request_root(conn: Any, timeout: float) -> Callable[[], Any]:
    """Send ``conn``'s GETROOT request now, without waiting for its reply (rule 5); the
    function returned waits (at most ``timeout`` seconds from now) and returns the root.

    A GETROOT carries no data: sending it before the peer has proved anything is safe;
    nothing the peer sends is read until the function is called."""
    pending = conn.async_request(_rpyc().getroot, timeout=timeout)
    return lambda: pending.value


def method_by_name(conn: Any, name: str, root: Any = None) -> Callable[[bytes], object]:
    """``root.<name>(frame)`` of the peer in one round trip (rule 5); the peer checks the
    name exactly as for a getattr (its ``_rpyc_getattr``). ``root``: the one
    ``request_root`` returned; None: fetched here (once)."""
    if root is None:
        root = conn.root
    callattr = _rpyc().callattr

    def call(frame: bytes) -> object:
        return conn.sync_request(callattr, root, name, (frame,), ())

    return call


def close_connection(sock: socket.socket, conn: Any) -> None:
    """Close ``conn`` (None: not opened yet) at once: ``sock`` is shut down first, so that
    nothing waits for the peer, then ``conn``'s resources are released (closed for good:
    later requests on it, or a netref's release, fail locally and send nothing)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    if conn is not None and not conn.closed:
        # rpyc's close() would first encode and try to send a CLOSE request, which the shut
        # down socket can only refuse (about 5% of a client's CPU per target): it is
        # skipped, and only what close() does after it, the cleanup, is done.
        conn._closed = True
        try:
            conn._cleanup(_anyway=True)
        except Exception:  # closing a broken connection
            log.debug("error closing an rpyc connection", exc_info=True)


__all__ = [
    "RPYC_FRAME_OVERHEAD",
    "PeerClosed",
    "capped_channel",
    "client_connection",
    "client_tls_context",
    "close_connection",
    "close_quietly",
    "exact_reader",
    "is_tls",
    "max_rpyc_frame",
    "max_served_frame",
    "method_by_name",
    "peer_uid",
    "preload",
    "protocol_config",
    "recv_exact",
    "request_root",
    "serve_connection",
    "server_tls_context",
    "set_nodelay",
    "set_request_timeout",
    "uid_allowed",
]
