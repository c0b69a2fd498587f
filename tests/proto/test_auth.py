"""Auth primitives: pre-auth frames, the mutual handshake and sealed sessions."""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reloadctl.errors import AuthenticationError, RemoteProtocolError
from reloadctl.proto import auth


def _body(frame: bytes) -> bytes:
    length = auth.frame_length(frame[:4])
    assert len(frame) == 4 + length
    return frame[4:]


def handshake(
    server_secret: bytes | None, client_secret: bytes | None, *, require_mac: bool = True
) -> tuple[auth.Session, auth.Session]:
    server = auth.ServerHandshake(server_secret)
    client = auth.ClientHandshake(client_secret, require_mac=require_mac)
    proof = client.answer(_body(server.hello()))
    welcome, server_session = server.respond(_body(proof))
    return client.finish(_body(welcome)), server_session


def test_matching_secrets_give_working_sessions() -> None:
    client, server = handshake(b"s3cret", b"s3cret")
    assert client.authenticated and server.authenticated
    for i in range(3):
        assert server.unseal(client.seal(b"req%d" % i)) == b"req%d" % i
        assert client.unseal(server.seal(b"rep%d" % i)) == b"rep%d" % i


def test_wrong_client_secret_is_denied_with_a_clear_message() -> None:
    server = auth.ServerHandshake(b"right")
    client = auth.ClientHandshake(b"wrong", require_mac=True)
    proof = client.answer(_body(server.hello()))
    with pytest.raises(AuthenticationError):
        server.respond(_body(proof))
    with pytest.raises(AuthenticationError, match="rejected our secret"):
        client.finish(_body(auth.ServerHandshake.denied()))


def test_client_detects_an_agent_that_does_not_know_the_secret() -> None:
    # An impostor that accepts anything but cannot compute the server proof.
    server = auth.ServerHandshake(b"impostor-guess")
    client = auth.ClientHandshake(b"real", require_mac=True)
    client.answer(_body(server.hello()))
    fake = auth.pack_frame({"t": "welcome", "mac": b"\0" * 32})
    with pytest.raises(AuthenticationError, match="could not prove"):
        client.finish(_body(fake))


def test_client_without_secret_is_told_how_to_give_one() -> None:
    server = auth.ServerHandshake(b"s")
    client = auth.ClientHandshake(None, require_mac=False)
    with pytest.raises(AuthenticationError, match="RELOADCTL_SECRET_FILE"):
        client.answer(_body(server.hello()))


def test_no_downgrade_to_mode_none_when_mac_required() -> None:
    server = auth.ServerHandshake(None)
    client = auth.ClientHandshake(b"s", require_mac=True)
    with pytest.raises(AuthenticationError, match="no authentication"):
        client.answer(_body(server.hello()))


def test_mode_none_on_unix_has_counters_but_no_mac() -> None:
    client, server = handshake(None, b"whatever", require_mac=False)
    assert not client.authenticated and not server.authenticated
    sealed = client.seal(b"x")
    assert len(sealed) == auth.COUNTER_BYTES + 1
    assert server.unseal(sealed) == b"x"
    with pytest.raises(AuthenticationError):
        server.unseal(sealed)  # replay of counter 0


def test_proof_is_bound_to_the_server_nonce() -> None:
    # A proof captured from one handshake does not open another.
    s1 = auth.ServerHandshake(b"k")
    c1 = auth.ClientHandshake(b"k", require_mac=True)
    captured = c1.answer(_body(s1.hello()))
    s2 = auth.ServerHandshake(b"k")
    s2.hello()
    with pytest.raises(AuthenticationError):
        s2.respond(_body(captured))


def _sealed_pair() -> tuple[auth.Session, auth.Session]:
    return handshake(b"key", b"key")


def test_tampered_message_rejected_and_session_poisoned() -> None:
    client, server = _sealed_pair()
    sealed = bytearray(client.seal(b'{"modules": ["a"]}'))
    sealed[10] ^= 1
    with pytest.raises(AuthenticationError, match="MAC"):
        server.unseal(bytes(sealed))
    with pytest.raises(AuthenticationError, match="closed"):
        server.unseal(client.seal(b"next"))


def test_replayed_and_reordered_messages_rejected() -> None:
    client, server = _sealed_pair()
    _first, second = client.seal(b"1"), client.seal(b"2")
    with pytest.raises(AuthenticationError, match="counter"):
        server.unseal(second)  # reordered
    client, server = _sealed_pair()
    m = client.seal(b"1")
    assert server.unseal(m) == b"1"
    with pytest.raises(AuthenticationError, match="counter"):
        server.unseal(m)  # replayed


def test_directions_use_different_keys() -> None:
    _client, server = _sealed_pair()
    reflected = server.seal(b"reply")
    with pytest.raises(AuthenticationError):
        server.unseal(reflected)  # a reply reflected back to the agent


def test_message_from_another_session_rejected() -> None:
    c1, _ = _sealed_pair()
    _, s2 = _sealed_pair()
    with pytest.raises(AuthenticationError):
        s2.unseal(c1.seal(b"x"))


@pytest.mark.parametrize("value", [b"", b"short", bytearray(b"x" * 64), "str", None])
def test_short_or_non_bytes_sealed_rejected(value: object) -> None:
    _, server = _sealed_pair()
    with pytest.raises(AuthenticationError):
        server.unseal(value)


BAD_HEADERS = [
    b"",
    b"\0\0\0",
    struct.pack("!I", 0),
    struct.pack("!I", auth.MAX_FRAME + 1),
    struct.pack("!I", 2**32 - 1),
]


@pytest.mark.parametrize("header", BAD_HEADERS)
def test_frame_length_cap(header: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        auth.frame_length(header)


BAD_PROOFS = [
    b"\xc1",
    msgpack.packb([1]),
    msgpack.packb({"v": 2, "t": "proof", "nonce": b"n" * 32, "mac": b""}),
    msgpack.packb({"v": 1, "t": "hello", "nonce": b"n" * 32, "mac": b""}),
    msgpack.packb({"v": 1, "t": "proof", "nonce": "n" * 32, "mac": b""}),
    msgpack.packb({"v": 1, "t": "proof", "nonce": b"n" * 31, "mac": b""}, use_bin_type=True),
    msgpack.packb({"v": 1, "t": "proof", "nonce": b"n" * 32}, use_bin_type=True),
    msgpack.packb({"v": True, "t": "proof", "nonce": b"n" * 32, "mac": b""}, use_bin_type=True),
]


@pytest.mark.parametrize("body", BAD_PROOFS)
def test_malformed_proof_frames(body: bytes) -> None:
    server = auth.ServerHandshake(b"k")
    server.hello()
    with pytest.raises((RemoteProtocolError, AuthenticationError)):
        server.respond(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_server_respond(body: bytes) -> None:
    server = auth.ServerHandshake(b"k")
    try:
        server.respond(body)
    except (RemoteProtocolError, AuthenticationError):
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_client_answer_and_finish(body: bytes) -> None:
    client = auth.ClientHandshake(b"k", require_mac=True)
    for step in (client.answer, client.finish):
        try:
            step(body)
        except (RemoteProtocolError, AuthenticationError):
            pass


def test_read_frame_uses_exact_reads() -> None:
    frame = auth.pack_frame({"t": "x"})
    buf = memoryview(frame)
    pos = 0

    def recv_exact(n: int) -> bytes:
        nonlocal pos
        out = bytes(buf[pos : pos + n])
        pos += n
        return out

    assert auth.read_frame(recv_exact) == frame[4:]


def test_session_repr_hides_keys() -> None:
    client, _ = _sealed_pair()
    assert "key" not in repr(client).lower() or "mac=" in repr(client)
    assert repr(client).startswith("Session(mac=True")
