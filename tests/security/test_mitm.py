"""A man in the middle of a cleartext tcp:// session: it can read, but every byte it changes,
and every message it replays, is caught by the MAC and counter of ``proto.auth``, in both
directions, through the real client (``connection.execute``) and a real agent."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest
from agentkit import SECRET, recv_exact, short_tmpdir

from reloadctl.agent import Agent, start
from reloadctl.client.connection import execute
from reloadctl.errors import RemoteProtocolError, TargetRefused
from reloadctl.proto.messages import AgentInfo, StatusRequest
from reloadctl.secrets import Secret

_RPYC_HEADER = struct.Struct("!LB")
#: pre-auth frames before rpyc speaks: hello + welcome (agent->client), proof (client->agent)
_PRE_AUTH = {"down": 2, "up": 1}

Tamper = Callable[[str, int, bytes], bytes | None]


class Proxy:
    """Forwards one connection at a time between a client and ``target``, frame by frame,
    letting ``tamper(direction, index, frame)`` change or drop (None) each rpyc frame."""

    def __init__(self, target: tuple[str, int], tamper: Tamper) -> None:
        self.target = target
        self.tamper = tamper
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.frames: dict[str, list[bytes]] = {"up": [], "down": []}
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target, timeout=5)
            self._socks += [client, upstream]
            for src, dst, direction in ((client, upstream, "up"), (upstream, client, "down")):
                t = threading.Thread(target=self._pipe, args=(src, dst, direction), daemon=True)
                self._threads.append(t)
                t.start()

    def _pipe(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        def read(n: int) -> bytes:
            buf = b""
            while len(buf) < n:
                chunk = src.recv(n - len(buf))
                if not chunk:
                    raise EOFError
                buf += chunk
            return buf

        try:
            for _ in range(_PRE_AUTH[direction]):
                header = read(4)
                dst.sendall(header + read(struct.unpack("!I", header)[0]))
            index = 0
            while True:
                header = read(_RPYC_HEADER.size)
                length, _flag = _RPYC_HEADER.unpack(header)
                frame = header + read(length + 1)  # + rpyc's trailing newline
                self.frames[direction].append(frame)
                out = self.tamper(direction, index, frame)
                index += 1
                if out is not None:
                    dst.sendall(out)
        except (EOFError, OSError):
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        # shutdown() first: close() alone does not wake a thread blocked in accept/recv
        for s in [self.listener, *self._socks]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self._threads:
            t.join(5)
        self._accept.join(5)


@pytest.fixture
def agent(monkeypatch: pytest.MonkeyPatch) -> Iterator[Agent]:
    for var in ("RELOADCTL_SECRET", "RELOADCTL_SECRET_FILE", "RELOADCTL_AGENT_LISTEN"):
        monkeypatch.delenv(var, raising=False)
    with short_tmpdir() as d:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(d))
        a = start("tcp://127.0.0.1:0", secret=SECRET)
        try:
            yield a
        finally:
            a.stop()


def _through(agent: Agent, tamper: Tamper) -> tuple[Proxy, Callable[[], object]]:
    host, port = agent.address[len("tcp://") :].rsplit(":", 1)
    proxy = Proxy((host, int(port)), tamper)

    def status() -> object:
        return execute(
            f"tcp://127.0.0.1:{proxy.port}",
            StatusRequest(),
            secret=Secret(SECRET),
            connect_timeout=3,
            timeout=2,
        )

    return proxy, status


def _sealed_tamperer(target: str) -> tuple[Tamper, list[bytes]]:
    """Flip one payload byte of the first sealed message sent in ``target`` direction (it
    starts with the 8-byte counter 0; rpyc's own frames carry no such run of zeros)."""
    done: list[bytes] = []

    def tamper(direction: str, index: int, frame: bytes) -> bytes:
        at = frame.find(b"\x00" * 8, _RPYC_HEADER.size)
        if direction != target or done or at < 0:
            return frame
        done.append(frame)
        data = bytearray(frame)
        data[at + 8 + 2] ^= 0x01
        return bytes(data)

    return tamper, done


def test_a_passive_proxy_changes_nothing(agent: Agent) -> None:
    proxy, status = _through(agent, lambda d, i, f: f)
    try:
        assert isinstance(status(), AgentInfo)
    finally:
        proxy.close()


def test_tampered_reply_is_rejected_by_the_client(agent: Agent) -> None:
    tamper, done = _sealed_tamperer("down")
    proxy, status = _through(agent, tamper)
    try:
        with pytest.raises(RemoteProtocolError, match="MAC does not verify"):
            status()
        assert done
    finally:
        proxy.close()


def test_tampered_request_is_rejected_by_the_agent(agent: Agent) -> None:
    tamper, done = _sealed_tamperer("up")
    proxy, status = _through(agent, tamper)
    try:
        with pytest.raises(TargetRefused, match="MAC does not verify") as info:
            status()
        assert info.value.code == "protocol"
        assert done
    finally:
        proxy.close()


def test_replayed_request_from_another_connection_is_rejected(agent: Agent) -> None:
    """Record a whole session, then replay the client's frames on a new connection: the
    agent's nonce differs, so the proof and every sealed message fail."""
    proxy, status = _through(agent, lambda d, i, f: f)
    try:
        assert isinstance(status(), AgentInfo)
    finally:
        proxy.close()
    host, port = agent.address[len("tcp://") :].rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    try:
        s.recv(4096)  # a fresh hello, with a fresh nonce
        # a replayed proof of the old session cannot match the new nonce; the agent says so
        from reloadctl.proto import auth

        old = auth.ClientHandshake(SECRET, require_mac=True)
        stale_hello = auth.ServerHandshake(SECRET).hello()
        s.sendall(old.answer(stale_hello[4:]))
        body = auth.read_frame(lambda n: recv_exact(s, n))
        with pytest.raises(Exception, match="wrong secret"):
            old.finish(body)
    finally:
        s.close()


def test_dropped_reply_times_out_at_the_callers_deadline(agent: Agent) -> None:
    """Swallowing the agent's answer to the request leaves the client waiting until its own
    deadline (2 s here, plus a 0.5 s margin), never longer, and nothing is accepted in its
    place."""
    import time

    from reloadctl.errors import TargetTimeout

    def drop_sealed_replies(direction: str, index: int, frame: bytes) -> bytes | None:
        sealed = frame.find(b"\x00" * 8, _RPYC_HEADER.size) >= 0
        return None if direction == "down" and sealed else frame

    proxy, status = _through(agent, drop_sealed_replies)
    try:
        started = time.monotonic()
        with pytest.raises(TargetTimeout):
            status()
        assert time.monotonic() - started < 3.5
    finally:
        proxy.close()
