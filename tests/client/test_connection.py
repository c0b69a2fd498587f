"""connection.execute against real agents and hostile fake ones, on real sockets."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from agentkit import SECRET, recv_exact

from reloadctl.agent import Agent, start
from reloadctl.client.connection import execute
from reloadctl.errors import (
    RemoteProtocolError,
    TargetAuthFailed,
    TargetTimeout,
    TargetUnreachable,
)
from reloadctl.proto import auth
from reloadctl.proto.messages import AgentInfo, ReloadRequest, StatusRequest
from reloadctl.secrets import Secret


@pytest.fixture
def slow_module(module: Callable[[str], tuple[ModuleType, Path]]) -> tuple[str, Path]:
    """A module whose reload takes about a second (its new body sleeps)."""
    mod, path = module("VALUE = 1\n")
    path.write_text("import time\ntime.sleep(1.0)\nVALUE = 2\n")
    return mod.__name__, path


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def call(address: str, request: object = None, *, secret: bytes | None = SECRET, **kw: float):  # type: ignore[no-untyped-def]
    return execute(
        address,
        request or StatusRequest(),  # type: ignore[arg-type]
        secret=None if secret is None else Secret(secret),
        connect_timeout=kw.get("connect_timeout", 1.0),
        timeout=kw.get("timeout", 5.0),
    )


def test_tcp_and_unix_round_trip_without_leaks(runtime_dir: Path) -> None:
    before = _fds()
    agent = start("tcp://127.0.0.1:0", secret=SECRET)
    for _ in range(5):
        assert isinstance(call(agent.address), AgentInfo)
    with pytest.raises(TargetAuthFailed):
        call(agent.address, secret=b"nope")
    agent.stop()
    agent = start(secret=None)
    for _ in range(5):
        assert isinstance(call(agent.address, secret=None), AgentInfo)
    agent.stop()
    time.sleep(0.2)
    assert _fds() == before


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("unix:///nonexistent/dir/a.sock", "no agent socket"),
        ("not an address", "whitespace"),
        ("http://x:1", "unknown scheme"),
        ("tls://127.0.0.1:1", "connection refused"),
    ],
)
def test_unreachable(address: str, fragment: str) -> None:
    with pytest.raises(TargetUnreachable, match=fragment):
        call(address)


def test_refused_tcp_port() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now
    with pytest.raises(TargetUnreachable, match="refused"):
        call(f"tcp://127.0.0.1:{port}")


FakeAgent = Callable[[socket.socket], None]


@pytest.fixture
def fake_agent() -> Iterator[Callable[[FakeAgent], str]]:
    """Run a hostile TCP 'agent' that handles one connection with the given function."""
    listeners: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def _serve(behaviour: FakeAgent) -> str:
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        listeners.append(lsock)

        def run() -> None:
            conn, _ = lsock.accept()
            with conn:
                try:
                    behaviour(conn)
                except OSError:
                    pass

        t = threading.Thread(target=run, daemon=True)
        t.start()
        threads.append(t)
        return f"tcp://127.0.0.1:{lsock.getsockname()[1]}"

    yield _serve
    for t in threads:
        t.join(5)
    for lsock in listeners:
        lsock.close()


def _read_proof(conn: socket.socket) -> bytes:
    return auth.read_frame(lambda n: recv_exact(conn, n))


def test_agent_that_cannot_prove_the_secret(fake_agent: Callable[[FakeAgent], str]) -> None:
    def impostor(conn: socket.socket) -> None:
        conn.sendall(auth.ServerHandshake(b"a guess").hello())
        _read_proof(conn)
        conn.sendall(auth.pack_frame({"t": "welcome", "mac": b"\x01" * 32}))
        time.sleep(0.5)

    with pytest.raises(TargetAuthFailed, match="could not prove"):
        call(fake_agent(impostor))


def test_no_downgrade_over_tcp(fake_agent: Callable[[FakeAgent], str]) -> None:
    def downgrade(conn: socket.socket) -> None:
        conn.sendall(auth.ServerHandshake(None).hello())
        time.sleep(0.5)

    with pytest.raises(TargetAuthFailed, match="no authentication"):
        call(fake_agent(downgrade))


@pytest.mark.parametrize(
    "garbage",
    [b"\x00\x00\x00\x05\xc1\xc1\xc1\xc1\xc1", b"\xff\xff\xff\xff", b"\x00\x00\x00\x02\x91\x01"],
)
def test_garbage_handshake_from_agent(
    fake_agent: Callable[[FakeAgent], str], garbage: bytes
) -> None:
    def garbler(conn: socket.socket) -> None:
        conn.sendall(garbage)
        time.sleep(0.5)

    with pytest.raises(RemoteProtocolError):
        call(fake_agent(garbler))


def test_silent_agent_times_out_at_connect_timeout(
    fake_agent: Callable[[FakeAgent], str],
) -> None:
    def silent(conn: socket.socket) -> None:
        time.sleep(1.5)

    started = time.monotonic()
    with pytest.raises(TargetTimeout, match="handshake"):
        call(fake_agent(silent), connect_timeout=0.5, timeout=10)
    assert time.monotonic() - started < 1.4


def test_agent_closing_mid_handshake_is_unreachable(
    fake_agent: Callable[[FakeAgent], str],
) -> None:
    def closer(conn: socket.socket) -> None:
        conn.sendall(auth.ServerHandshake(SECRET).hello()[:10])

    with pytest.raises(TargetUnreachable):
        call(fake_agent(closer))


def test_client_timeout_does_not_stop_the_reload(
    runtime_dir: Path, slow_module: tuple[str, Path]
) -> None:
    name, _ = slow_module
    agent = start(secret=None)
    started = time.monotonic()
    with pytest.raises(TargetTimeout, match="keeps running"):
        call(agent.address, ReloadRequest((name,)), secret=None, timeout=0.3)
    assert time.monotonic() - started < 1.0
    # status is answered at once while the reload still runs
    t = time.monotonic()
    assert isinstance(call(agent.address, secret=None), AgentInfo)
    assert time.monotonic() - t < 0.5
    assert sys.modules[name].VALUE == 1  # type: ignore[attr-defined]
    # the client is gone; the reload completes inside the agent anyway
    deadline = time.monotonic() + 5
    while getattr(sys.modules[name], "VALUE", None) != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sys.modules[name].VALUE == 2  # type: ignore[attr-defined]


def test_agent_side_deadline_reports_timeout_per_module(
    runtime_dir: Path, slow_module: tuple[str, Path]
) -> None:
    name, _ = slow_module
    agent = start(secret=None)
    results = call(agent.address, ReloadRequest((name,), deadline_s=0.2), secret=None)
    assert isinstance(results, tuple)
    assert [(r.module, r.status) for r in results] == [(name, "failed")]
    assert results[0].error is not None and results[0].error.type == "Timeout"
    assert "still running" in results[0].error.message
    # a job queued behind it past its own deadline never starts
    assert isinstance(call(agent.address, secret=None), AgentInfo)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a listener as another uid")
def test_impostor_socket_owned_by_another_uid(runtime_dir: Path) -> None:
    sock_dir = runtime_dir / "shared"
    sock_dir.mkdir()
    sock_dir.chmod(0o777)
    runtime_dir.chmod(0o755)
    path = sock_dir / "victim-1.sock"
    code = textwrap.dedent(
        f"""
        import socket, sys, time
        s = socket.socket(socket.AF_UNIX)
        s.bind({str(path)!r}); s.listen()
        print("ready", flush=True)
        c, _ = s.accept()
        time.sleep(2)
        """
    )
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    proc = subprocess.Popen(
        [python, "-c", code], user=65534, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        with pytest.raises(TargetAuthFailed, match="uid 65534"):
            call(f"unix://{path}", secret=None)
    finally:
        proc.kill()
        proc.communicate()
        runtime_dir.chmod(0o700)


def test_agent_stopping_mid_request_is_unreachable(
    runtime_dir: Path, slow_module: tuple[str, Path]
) -> None:
    name, _ = slow_module
    agent: Agent = start("tcp://127.0.0.1:0", secret=SECRET)
    timer = threading.Timer(0.3, agent.stop)
    timer.start()
    try:
        with pytest.raises(TargetUnreachable):
            call(agent.address, ReloadRequest((name,)), timeout=5)
    finally:
        timer.join()


@pytest.mark.parametrize(
    "frame",
    [
        struct.pack("!LB", 100, 1) + zlib.compress(b"\0" * 1000)[:100] + b"\n",  # compressed
        struct.pack("!LB", 2**31, 0),  # oversized
    ],
)
def test_authenticated_agent_cannot_send_bombs(
    fake_agent: Callable[[FakeAgent], str], frame: bytes
) -> None:
    def bomber(conn: socket.socket) -> None:
        server = auth.ServerHandshake(SECRET)
        conn.sendall(server.hello())
        welcome, _session = server.respond(_read_proof(conn))
        conn.sendall(welcome)
        recv_exact(conn, 5)  # the client's first rpyc frame header
        conn.sendall(frame)
        time.sleep(0.5)

    with pytest.raises(RemoteProtocolError, match="compressed or oversized"):
        call(fake_agent(bomber))
