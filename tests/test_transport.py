"""The shared transport on real sockets: exact reads, the capped channel, peer uid, the rpyc
configuration, and a served connection called by name."""

from __future__ import annotations

import contextlib
import gc
import os
import select
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from rpyc.core.service import Service

from reloadctl import transport
from reloadctl.errors import RemoteProtocolError

HEADER = struct.Struct("!LB")  # rpyc's frame header: length, compressed flag


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def frame(payload: bytes, compressed: int = 0) -> bytes:
    return HEADER.pack(len(payload), compressed) + payload + b"\n"


# -- recv_exact -------------------------------------------------------------------------------


def test_recv_exact_joins_chunks(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    threading.Timer(0.05, peer.sendall, args=(b"def",)).start()
    peer.sendall(b"abc")
    deadline = time.monotonic() + 5
    assert transport.recv_exact(ours, 6, deadline, own_timeout=True) == b"abcdef"


@pytest.mark.parametrize("own_timeout", [True, False])
def test_recv_exact_gives_up_at_the_deadline(
    pair: tuple[socket.socket, socket.socket], own_timeout: bool
) -> None:
    ours, peer = pair
    peer.sendall(b"ab")
    ours.settimeout(0.05)  # without own_timeout, how often the deadline is looked at
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        transport.recv_exact(ours, 5, started + 0.3, own_timeout=own_timeout)
    assert 0.25 < time.monotonic() - started < 2


def test_recv_exact_reports_a_closed_peer(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    peer.sendall(b"ab")
    peer.close()
    with pytest.raises(EOFError):
        transport.recv_exact(ours, 5, time.monotonic() + 5, own_timeout=True)


# -- the capped channel -----------------------------------------------------------------------


@pytest.mark.parametrize("deadline", [30.0, None], ids=["agent", "client"])
def test_a_whole_frame_is_returned(
    pair: tuple[socket.socket, socket.socket], deadline: float | None
) -> None:
    ours, peer = pair
    peer.sendall(frame(b"hello"))
    assert transport.capped_channel(ours, deadline).recv() == b"hello"


@pytest.mark.parametrize("deadline", [30.0, None], ids=["agent", "client"])
@pytest.mark.parametrize(
    "header",
    [
        HEADER.pack(2**31, 0),  # oversized: refused from the header alone
        HEADER.pack(100, 1),  # compressed: refused before any inflating
    ],
    ids=["oversized", "compressed"],
)
def test_oversized_and_compressed_frames_are_refused_from_the_header(
    pair: tuple[socket.socket, socket.socket], deadline: float | None, header: bytes
) -> None:
    ours, peer = pair
    peer.sendall(header)  # and nothing more: the refusal must not wait for the body
    ours.settimeout(5)
    started = time.monotonic()
    with pytest.raises(RemoteProtocolError, match="compressed or oversized"):
        transport.capped_channel(ours, deadline).recv()
    assert time.monotonic() - started < 1


def test_the_largest_allowed_frame_passes(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    payload = b"x" * transport.max_rpyc_frame()
    sender = threading.Thread(target=peer.sendall, args=(frame(payload),))
    sender.start()
    try:
        assert transport.capped_channel(ours, 30.0).recv() == payload
    finally:
        sender.join(10)


def test_the_served_side_takes_a_push_sized_frame_and_the_client_does_not(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # the agent's largest request is a push (codec.MAX_PUSH_MESSAGE_BYTES); the client
    # only receives replies, capped at one ordinary message
    assert transport.max_served_frame() > transport.max_rpyc_frame()
    ours, peer = pair
    payload = b"x" * (transport.max_rpyc_frame() + 1)
    sender = threading.Thread(target=peer.sendall, args=(frame(payload),))
    sender.start()
    try:
        served = transport.capped_channel(ours, 30.0, transport.max_served_frame())
        assert served.recv() == payload
    finally:
        sender.join(10)
    peer.sendall(HEADER.pack(transport.max_served_frame() + 1, 0))
    with pytest.raises(RemoteProtocolError, match="oversized"):
        transport.capped_channel(ours, 30.0, transport.max_served_frame()).recv()
    a, b = socket.socketpair()
    try:
        b.sendall(HEADER.pack(transport.max_rpyc_frame() + 1, 0))
        with pytest.raises(RemoteProtocolError, match="oversized"):
            transport.capped_channel(a, None).recv()
    finally:
        a.close()
        b.close()


def test_a_frame_stalled_midway_is_dropped_at_its_deadline(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    peer.sendall(HEADER.pack(100, 0) + b"x" * 10)
    ours.settimeout(0.05)
    started = time.monotonic()
    with pytest.raises(RemoteProtocolError, match="stalled"):
        transport.capped_channel(ours, 0.3).recv()
    assert 0.25 < time.monotonic() - started < 2


def test_a_closing_peer_is_peer_closed_on_the_agent_and_eof_on_the_client(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    peer.sendall(HEADER.pack(100, 0) + b"x")
    peer.shutdown(socket.SHUT_WR)
    with pytest.raises(transport.PeerClosed):
        transport.capped_channel(ours, 30.0).recv()
    a, b = socket.socketpair()
    try:
        b.close()
        with pytest.raises(EOFError):
            transport.capped_channel(a, None).recv()
    finally:
        a.close()


def test_the_channel_never_compresses(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    payload = b"\0" * 100_000  # rpyc would compress this by default
    sender = threading.Thread(target=transport.capped_channel(ours, None).send, args=(payload,))
    sender.start()
    peer.settimeout(5)
    length, compressed = HEADER.unpack(
        transport.recv_exact(peer, 5, time.monotonic() + 5, own_timeout=False)
    )
    sender.join(10)
    assert (length, compressed) == (len(payload), 0)
    assert zlib.compress(payload) != payload  # (it would have been worth compressing)


# -- peers and TLS ----------------------------------------------------------------------------


def test_peer_uid_of_a_unix_socket(pair: tuple[socket.socket, socket.socket]) -> None:
    assert transport.peer_uid(pair[0]) == os.getuid()


@pytest.mark.parametrize(
    ("uid", "allowed"),
    [(os.getuid(), True), (0, True), (os.getuid() + 12345, False), (65534, os.getuid() == 65534)],
)
def test_uid_allowed(uid: int, allowed: bool) -> None:
    assert transport.uid_allowed(uid) is allowed


def test_plain_sockets_are_not_tls(pair: tuple[socket.socket, socket.socket]) -> None:
    assert not transport.is_tls(pair[0])


# -- the rpyc configuration -------------------------------------------------------------------


def test_both_sides_are_locked_down_alike() -> None:
    agent = transport.protocol_config(
        sync_request_timeout=3.0, logger=None, interrupts_stay_local=False
    )
    client = transport.protocol_config(
        sync_request_timeout=9.0, logger=None, interrupts_stay_local=True
    )
    differs = {k for k in agent if agent[k] != client[k]}
    assert differs == {"sync_request_timeout", "propagate_KeyboardInterrupt_locally"}
    for key in (
        "allow_pickle",
        "allow_public_attrs",
        "allow_all_attrs",
        "allow_setattr",
        "allow_delattr",
        "include_local_traceback",
        "import_custom_exceptions",
        "instantiate_custom_exceptions",
        "propagate_SystemExit_locally",
    ):
        assert agent[key] is False, key
    assert agent["close_catchall"] is True


# -- a served connection, called by name ------------------------------------------------------


class Echo(Service):  # type: ignore[misc]
    """A root with two reachable methods, as the agent's service is built."""

    def _rpyc_getattr(self, name: object) -> object:
        if name == "echo":
            return self.echo
        if name == "size":
            return self.size
        raise AttributeError("cannot access that attribute")

    def size(self, frame: bytes) -> int:
        return len(frame)

    def echo(self, frame: object) -> object:
        if frame == b"slow":
            time.sleep(1.0)
        return frame


@pytest.fixture
def served(
    pair: tuple[socket.socket, socket.socket],
) -> Iterator[tuple[socket.socket, Any, list[BaseException]]]:
    """A client connection (with its socket) to ``Echo`` served on the other end, and how
    the serving ended (filled once it did)."""
    ours, theirs = pair
    ended: list[BaseException] = []

    def serve() -> None:
        try:
            transport.serve_connection(
                theirs,
                Echo(),
                frame_deadline_s=5.0,
                config=transport.protocol_config(
                    sync_request_timeout=3.0, logger=None, interrupts_stay_local=False
                ),
            )
        except BaseException as exc:  # the test looks at how it ended
            ended.append(exc)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    conn = transport.client_connection(ours, sync_request_timeout=5.0)
    try:
        yield ours, conn, ended
    finally:
        transport.close_connection(ours, conn)
        server.join(5)
    assert not server.is_alive()


def test_calls_by_name_round_trip_and_end_cleanly(
    served: tuple[socket.socket, Any, list[BaseException]],
) -> None:
    sock, conn, ended = served
    echo = transport.method_by_name(conn, "echo")
    assert echo(b"abc") == b"abc"
    assert echo(b"x" * 10_000) == b"x" * 10_000
    with pytest.raises(Exception, match="cannot access"):
        transport.method_by_name(conn, "__class__")(b"")
    transport.close_connection(sock, conn)
    deadline = time.monotonic() + 5
    while not ended and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(ended) == 1 and isinstance(ended[0], (transport.PeerClosed, EOFError))


def test_a_served_connection_takes_a_request_over_the_client_cap(
    served: tuple[socket.socket, Any, list[BaseException]],
) -> None:
    _sock, conn, ended = served
    big = b"p" * (transport.max_rpyc_frame() + 1024)
    assert transport.method_by_name(conn, "size")(big) == len(big)
    assert not ended  # still serving


def test_the_request_timeout_can_be_set_per_call(
    served: tuple[socket.socket, Any, list[BaseException]],
) -> None:
    _sock, conn, _ended = served
    echo = transport.method_by_name(conn, "echo")
    transport.set_request_timeout(conn, 0.2)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        echo(b"slow")
    assert time.monotonic() - started < 0.9


def test_the_root_is_requested_before_the_peer_serves(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # the client's pipelining: GETROOT is on the wire before the peer reads anything, and
    # the root it returns is the one calls by name go to
    ours, theirs = pair
    conn = transport.client_connection(ours, sync_request_timeout=5.0)
    server: threading.Thread | None = None
    try:
        root = transport.request_root(conn, 5.0)
        readable, _, _ = select.select([theirs], [], [], 2.0)
        assert readable == [theirs]  # sent, not waiting for anything

        def serve() -> None:
            with contextlib.suppress(BaseException):
                transport.serve_connection(
                    theirs,
                    Echo(),
                    frame_deadline_s=5.0,
                    config=transport.protocol_config(
                        sync_request_timeout=3.0, logger=None, interrupts_stay_local=False
                    ),
                )

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        echo = transport.method_by_name(conn, "echo", root())
        assert echo(b"pipelined") == b"pipelined"
    finally:
        transport.close_connection(ours, conn)
        if server is not None:
            server.join(5)
    assert server is not None and not server.is_alive()


def test_close_connection_closes_for_good_without_a_word_to_the_peer(
    served: tuple[socket.socket, Any, list[BaseException]],
) -> None:
    sock, conn, ended = served
    echo = transport.method_by_name(conn, "echo")
    assert echo(b"abc") == b"abc"
    transport.close_connection(sock, conn)
    assert conn.closed
    deadline = time.monotonic() + 5
    while not ended and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ended and isinstance(ended[0], (transport.PeerClosed, EOFError))  # no CLOSE request
    with pytest.raises((EOFError, OSError)):  # refused here: the connection is released
        echo(b"again")
    transport.close_connection(sock, conn)  # twice: a no-op
    assert conn.closed


def test_the_root_proxy_is_released_on_an_open_connection_and_silent_on_a_closed_one(
    served: tuple[socket.socket, Any, list[BaseException]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rpyc.core import brine, consts

    sock, conn, _ended = served
    handlers: list[object] = []  # the handler of every request rpyc encodes
    dump = brine.dump

    def spy(obj: Any) -> bytes:
        _seq, args = obj
        if isinstance(args, tuple) and args:
            handlers.append(args[0])
        data: bytes = dump(obj)
        return data

    monkeypatch.setattr(brine, "dump", spy)
    root = transport.request_root(conn, 5.0)()
    del root
    gc.collect()
    # on an open connection the agent is told it may drop its reference
    assert consts.HANDLE_DEL in handlers
    root = transport.request_root(conn, 5.0)()
    transport.close_connection(sock, conn)
    handlers.clear()
    del root
    gc.collect()
    assert handlers == []  # closed: nothing is even encoded
