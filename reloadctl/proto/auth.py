"""Pure auth primitives: pre-auth frames, the mutual HMAC-SHA256 handshake and message sealing.

Rules:
1. Before rpyc speaks, the two sides exchange three *pre-auth frames*: a 4-byte big-endian
   length, then a msgpack map. A frame is at most ``MAX_FRAME`` bytes; a length of 0 or over
   the cap, malformed msgpack, a non-map, or wrong fields is a ``RemoteProtocolError``.
2. The handshake (server nonce first, so a client proof can never be replayed):
   S->C ``hello{v, nonce_s, mode}``, C->S ``proof{v, nonce_c, mac}``,
   S->C ``welcome{v, mac}`` or ``denied{v, reason}``. Nonces are ``NONCE_BYTES`` random
   bytes. With a secret (``mode == "hmac"``):
   ``mac_c = HMAC(secret, "reloadctl/1 client" | nonce_s | nonce_c)`` and
   ``mac_s = HMAC(secret, "reloadctl/1 server" | nonce_s | nonce_c)`` (distinct labels: a
   proof cannot be reflected). The client verifies ``mac_s``, so an agent that does not
   know the secret cannot impersonate one.
3. Without a secret (``mode == "none"``, only allowed on unix sockets where the peer uid is
   checked instead) the same frames flow with empty MACs, and sessions do not MAC.
   A client that requires a MAC (every TCP connection) refuses ``mode == "none"``: no
   downgrade.
4. Session keys: ``k = HMAC(secret, "reloadctl/1 session" | nonce_s | nonce_c)``,
   ``k_c2s = HMAC(k, "c2s")``, ``k_s2c = HMAC(k, "s2c")``.
5. Sealing: every message after the handshake is ``counter(8, big-endian) | payload | tag``
   with ``tag = HMAC(k_dir, counter | payload)`` (no tag in mode "none"). Each direction
   counts from 0; the receiver accepts exactly the next counter, so a tampered, reordered,
   dropped or replayed message raises ``AuthenticationError``, after which the session
   refuses everything (it is poisoned).
6. Comparisons of MACs are constant time; no secret or key appears in any message or repr.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable

import msgpack

from reloadctl.errors import AuthenticationError, RemoteProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

VERSION: Final = 1
MAX_FRAME: Final = 4096
NONCE_BYTES: Final = 32
MAC_BYTES: Final = 32
COUNTER_BYTES: Final = 8
MODE_HMAC: Final = "hmac"
MODE_NONE: Final = "none"

_HEADER: Final = struct.Struct("!I")
_COUNTER: Final = struct.Struct("!Q")
_LABEL_CLIENT: Final = b"reloadctl/1 client"
_LABEL_SERVER: Final = b"reloadctl/1 server"
_LABEL_SESSION: Final = b"reloadctl/1 session"

#: The one line a client shows when the agent denied its proof.
DENIED_MESSAGE: Final = (
    "the agent rejected our secret (wrong secret): use the agent's secret via "
    "RELOADCTL_SECRET_FILE or --secret-file"
)
MISSING_KEY_MESSAGE: Final = (
    "the agent requires a secret and none was given: set RELOADCTL_SECRET_FILE "
    "(a chmod 600 file) or pass --secret-file"
)
AGENT_PROOF_MESSAGE: Final = (
    "the agent could not prove it knows the secret: it may be an impostor, or it runs "
    "with a different secret"
)
DOWNGRADE_MESSAGE: Final = (
    "the agent offers no authentication on a connection that requires it (tcp): refusing"
)


def _mac(key: bytes, *parts: bytes) -> bytes:
    # imported here: OpenSSL's digests cost a host ~0.6 MiB, and a unix-socket agent
    # without a secret never needs them
    import hashlib
    import hmac

    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()


def _same(a: bytes, b: bytes) -> bool:
    """Constant-time comparison (``hmac.compare_digest``, imported where used)."""
    import hmac

    return hmac.compare_digest(a, b)


# -- frames --------------------------------------------------------------------------------


def pack_frame(fields: dict[str, object]) -> bytes:
    """Return one pre-auth frame (rule 1) carrying ``fields`` plus ``v``."""
    body: bytes = msgpack.packb({"v": VERSION, **fields}, use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise ValueError(f"pre-auth frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return _HEADER.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    """Return the body length announced by a 4-byte frame header (rule 1)."""
    if len(header) != _HEADER.size:
        raise RemoteProtocolError("truncated pre-auth frame header")
    (length,) = _HEADER.unpack(header)
    if not 0 < length <= MAX_FRAME:
        raise RemoteProtocolError(f"pre-auth frame length {length} outside 1..{MAX_FRAME}")
    return int(length)


def unpack_frame(body: bytes, kind: str, fields: dict[str, type]) -> dict[str, object]:
    """Decode a frame body of type ``kind`` with exactly ``fields`` (name -> type) plus v/t."""
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException):
        raise RemoteProtocolError("malformed pre-auth frame") from None
    if type(obj) is not dict:
        raise RemoteProtocolError("pre-auth frame is not a map")
    if obj.get("v") != VERSION or type(obj.get("v")) is not int:
        raise RemoteProtocolError(f"unsupported handshake version (this side speaks {VERSION})")
    if obj.get("t") != kind:
        raise RemoteProtocolError(f"expected a {kind!r} handshake frame")
    if set(obj) != {"v", "t", *fields}:
        raise RemoteProtocolError(f"wrong fields in {kind!r} handshake frame")
    for name, typ in fields.items():
        if type(obj[name]) is not typ:
            raise RemoteProtocolError(f"{kind}.{name}: expected {typ.__name__}")
    return obj


def read_frame(recv_exact: Callable[[int], bytes]) -> bytes:
    """Read one frame body through ``recv_exact(n)`` (which returns exactly n bytes or raises)."""
    return recv_exact(frame_length(recv_exact(_HEADER.size)))


# -- sessions ------------------------------------------------------------------------------


class Session:
    """Seals and unseals the messages of one authenticated connection (rule 5). Thread-safe."""

    __slots__ = ("_lock", "_poisoned", "_recv_key", "_recv_seq", "_send_key", "_send_seq")

    def __init__(self, send_key: bytes | None, recv_key: bytes | None) -> None:
        self._send_key = send_key
        self._recv_key = recv_key
        self._send_seq = 0
        self._recv_seq = 0
        self._poisoned = False
        self._lock = threading.Lock()

    @property
    def authenticated(self) -> bool:
        """True when messages carry MACs (mode "hmac")."""
        return self._recv_key is not None

    def __repr__(self) -> str:
        return f"Session(mac={self.authenticated}, sent={self._send_seq}, recv={self._recv_seq})"

    def seal(self, payload: bytes) -> bytes:
        """Return ``payload`` framed with the next send counter and its MAC."""
        with self._lock:
            counter = _COUNTER.pack(self._send_seq)
            self._send_seq += 1
        if self._send_key is None:
            return counter + payload
        return counter + payload + _mac(self._send_key, counter, payload)

    def unseal(self, frame: object) -> bytes:
        """Verify and strip the counter and MAC of a received message.

        Raises:
            AuthenticationError: not bytes, too short, wrong counter, bad MAC, or the session
                already failed once.
        """
        if type(frame) is not bytes:
            raise AuthenticationError("sealed message is not bytes")
        tag_len = MAC_BYTES if self._recv_key is not None else 0
        with self._lock:
            if self._poisoned:
                raise AuthenticationError("session closed after an authentication failure")
            if len(frame) < COUNTER_BYTES + tag_len:
                self._poisoned = True
                raise AuthenticationError("sealed message too short")
            counter = frame[:COUNTER_BYTES]
            payload = frame[COUNTER_BYTES : len(frame) - tag_len]
            if self._recv_key is not None:
                tag = frame[len(frame) - tag_len :]
                if not _same(tag, _mac(self._recv_key, counter, payload)):
                    self._poisoned = True
                    raise AuthenticationError("message MAC does not verify (tampered?)")
            (seq,) = _COUNTER.unpack(counter)
            if seq != self._recv_seq:
                self._poisoned = True
                raise AuthenticationError(
                    f"message counter {seq} where {self._recv_seq} was expected (replay?)"
                )
            self._recv_seq += 1
        return payload


def _session_keys(secret: bytes, nonce_s: bytes, nonce_c: bytes) -> tuple[bytes, bytes]:
    master = _mac(secret, _LABEL_SESSION, nonce_s, nonce_c)
    return _mac(master, b"c2s"), _mac(master, b"s2c")


# -- handshake -----------------------------------------------------------------------------


class ServerHandshake:
    """The agent's side of rule 2. ``secret=None`` means mode "none" (unix sockets only)."""

    __slots__ = ("_nonce", "_secret")

    def __init__(self, secret: bytes | None, *, nonce: bytes | None = None) -> None:
        self._secret = secret
        self._nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce

    @property
    def mode(self) -> str:
        """``"hmac"`` or ``"none"``."""
        return MODE_NONE if self._secret is None else MODE_HMAC

    def hello(self) -> bytes:
        """The first frame, sent as soon as the connection is accepted."""
        return pack_frame({"t": "hello", "nonce": self._nonce, "mode": self.mode})

    def respond(self, proof_body: bytes) -> tuple[bytes, Session]:
        """Check the client's proof; return the ``welcome`` frame and the session.

        Raises:
            RemoteProtocolError: the frame is malformed.
            AuthenticationError: the proof does not verify (send ``denied()`` then close).
        """
        msg = unpack_frame(proof_body, "proof", {"nonce": bytes, "mac": bytes})
        nonce_c = msg["nonce"]
        mac = msg["mac"]
        assert isinstance(nonce_c, bytes) and isinstance(mac, bytes)
        if len(nonce_c) != NONCE_BYTES:
            raise RemoteProtocolError("client nonce has the wrong length")
        if self._secret is None:
            if mac:
                raise RemoteProtocolError("unexpected MAC in mode 'none'")
            return pack_frame({"t": "welcome", "mac": b""}), Session(None, None)
        expected = _mac(self._secret, _LABEL_CLIENT, self._nonce, nonce_c)
        if not _same(mac, expected):
            raise AuthenticationError("client proof does not verify (wrong secret)")
        c2s, s2c = _session_keys(self._secret, self._nonce, nonce_c)
        welcome = pack_frame(
            {"t": "welcome", "mac": _mac(self._secret, _LABEL_SERVER, self._nonce, nonce_c)}
        )
        return welcome, Session(send_key=s2c, recv_key=c2s)

    @staticmethod
    def denied() -> bytes:
        """The frame telling a client its proof was wrong (carries no detail)."""
        return pack_frame({"t": "denied", "reason": "bad proof"})


class ClientHandshake:
    """The client's side of rule 2; ``require_mac`` refuses mode "none" (rule 3)."""

    __slots__ = ("_nonce", "_nonce_s", "_require_mac", "_secret")

    def __init__(
        self, secret: bytes | None, *, require_mac: bool, nonce: bytes | None = None
    ) -> None:
        self._secret = secret
        self._require_mac = require_mac
        self._nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
        self._nonce_s: bytes | None = None

    def answer(self, hello_body: bytes) -> bytes:
        """Answer the agent's ``hello`` with our nonce and proof.

        Raises:
            RemoteProtocolError: malformed hello.
            AuthenticationError: the agent needs a secret we lack, or offers no
                authentication where we require it.
        """
        msg = unpack_frame(hello_body, "hello", {"nonce": bytes, "mode": str})
        nonce_s, mode = msg["nonce"], msg["mode"]
        assert isinstance(nonce_s, bytes)
        if len(nonce_s) != NONCE_BYTES:
            raise RemoteProtocolError("agent nonce has the wrong length")
        if mode == MODE_NONE:
            if self._require_mac:
                raise AuthenticationError(DOWNGRADE_MESSAGE)
            self._secret = None  # the agent checks our uid instead; nothing to prove
        elif mode == MODE_HMAC:
            if self._secret is None:
                raise AuthenticationError(MISSING_KEY_MESSAGE)
        else:
            raise RemoteProtocolError("unknown handshake mode")
        self._nonce_s = nonce_s
        mac = (
            b"" if self._secret is None else _mac(self._secret, _LABEL_CLIENT, nonce_s, self._nonce)
        )
        return pack_frame({"t": "proof", "nonce": self._nonce, "mac": mac})

    def finish(self, body: bytes) -> Session:
        """Check the agent's ``welcome`` (its proof) and return the session.

        Raises:
            RemoteProtocolError: malformed frame, or called before ``answer``.
            AuthenticationError: ``denied`` (our secret is wrong) or a bad agent proof.
        """
        if self._nonce_s is None:
            raise RemoteProtocolError("handshake out of order")
        try:
            msg = unpack_frame(body, "welcome", {"mac": bytes})
        except RemoteProtocolError:
            unpack_frame(body, "denied", {"reason": str})  # raises if it is not a denial
            raise AuthenticationError(DENIED_MESSAGE) from None
        mac = msg["mac"]
        assert isinstance(mac, bytes)
        if self._secret is None:
            if mac:
                raise RemoteProtocolError("unexpected MAC in mode 'none'")
            return Session(None, None)
        expected = _mac(self._secret, _LABEL_SERVER, self._nonce_s, self._nonce)
        if not _same(mac, expected):
            raise AuthenticationError(AGENT_PROOF_MESSAGE)
        c2s, s2c = _session_keys(self._secret, self._nonce_s, self._nonce)
        return Session(send_key=c2s, recv_key=s2c)
