"""The agent's server and service on real unix and TCP sockets: auth, hardening, bounds."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import msgpack
import pytest
from agentkit import SECRET, AgentProcess, RawClient, closed_by_peer, recv_exact, short_tmpdir

from reloadctl.agent import Agent, start
from reloadctl.client.connection import execute
from reloadctl.errors import TargetAuthFailed, TargetRefused, TargetUnreachable
from reloadctl.proto import auth, codec
from reloadctl.proto.messages import (
    AgentInfo,
    ErrorReply,
    JobAccepted,
    PollRequest,
    ReloadRequest,
    RollbackRequest,
    StatusRequest,
)
from reloadctl.secrets import Secret


@pytest.fixture
def target_module(module: Callable[[str], tuple[ModuleType, Path]]) -> tuple[str, Path]:
    """A real module, imported, whose file the test may edit."""
    mod, path = module("VALUE = 1\n")
    return mod.__name__, path


def _tcp(agents: Callable[..., Agent], **kwargs: object) -> Agent:
    return agents("tcp://127.0.0.1:0", secret=SECRET, **kwargs)


def run(agent: Agent, request: object, secret: bytes | None = SECRET, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    return execute(
        agent.address,
        request,  # type: ignore[arg-type]
        secret=None if secret is None else Secret(secret),
        connect_timeout=2.0,
        timeout=timeout,
    )


def test_status_over_default_unix_socket(agents: Callable[..., Agent], runtime_dir: Path) -> None:
    agent = agents()
    assert agent.address.startswith(f"unix://{runtime_dir}/reloadctl/")
    info = run(agent, StatusRequest(), secret=None)
    assert isinstance(info, AgentInfo)
    assert info.pid == os.getpid()
    assert info.address == agent.address
    assert info.read_only is False
    assert info.python.startswith(f"{sys.version_info[0]}.{sys.version_info[1]}")


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_reload_round_trip(
    agents: Callable[..., Agent], target_module: tuple[str, Path], transport: str
) -> None:
    name, path = target_module
    agent = agents() if transport == "unix" else _tcp(agents)
    path.write_text("VALUE = 2\n")
    results = run(agent, ReloadRequest((name, "rc_no_such_module")))
    assert isinstance(results, tuple)
    assert [(r.module, r.status) for r in results] == [
        (name, "reloaded"),
        ("rc_no_such_module", "not_loaded"),
    ]
    assert sys.modules[name].VALUE == 2  # type: ignore[attr-defined]
    status = run(agent, StatusRequest())
    assert isinstance(status, AgentInfo)
    assert name in [p.module for p in status.patched]


def test_wrong_secret_is_rejected_and_the_agent_keeps_serving(
    agents: Callable[..., Agent],
) -> None:
    agent = _tcp(agents)
    for _ in range(3):
        with pytest.raises(TargetAuthFailed, match="rejected our secret"):
            run(agent, StatusRequest(), secret=b"wrong")
    assert isinstance(run(agent, StatusRequest()), AgentInfo)


def test_missing_secret_says_how_to_fix(agents: Callable[..., Agent]) -> None:
    agent = _tcp(agents)
    with pytest.raises(TargetAuthFailed, match="RELOADCTL_SECRET_FILE"):
        run(agent, StatusRequest(), secret=None)


def test_unix_agent_with_secret_requires_it(agents: Callable[..., Agent]) -> None:
    agent = agents(secret=SECRET)
    with pytest.raises(TargetAuthFailed):
        run(agent, StatusRequest(), secret=None)
    assert isinstance(run(agent, StatusRequest()), AgentInfo)


def test_read_only_agent_refuses_changes(
    agents: Callable[..., Agent], target_module: tuple[str, Path]
) -> None:
    agent = agents(read_only=True)
    for request in (ReloadRequest((target_module[0],)), RollbackRequest((target_module[0],))):
        with pytest.raises(TargetRefused) as info:
            run(agent, request)
        assert info.value.code == "forbidden"
    status = run(agent, StatusRequest())
    assert isinstance(status, AgentInfo) and status.read_only


_VETO = threading.Event()
_AUDITED: list[tuple[str, tuple[object, ...]]] = []


def _audit_hook(event: str, args: tuple[object, ...]) -> None:
    if event.startswith("reloadctl."):
        _AUDITED.append((event, args))
        if _VETO.is_set():
            raise PermissionError("reloads are frozen")


sys.addaudithook(_audit_hook)  # permanent, but inert unless _VETO is set


def test_audit_event_and_veto(
    agents: Callable[..., Agent], target_module: tuple[str, Path]
) -> None:
    agent = agents()
    name = target_module[0]
    _AUDITED.clear()
    run(agent, ReloadRequest((name,)))
    assert ("reloadctl.reload", ((name,),)) in _AUDITED
    _VETO.set()
    try:
        with pytest.raises(TargetRefused, match="frozen") as info:
            run(agent, ReloadRequest((name,)))
        assert info.value.code == "forbidden"
    finally:
        _VETO.clear()


def test_tampered_replayed_and_unsealed_messages_are_rejected(
    agents: Callable[..., Agent],
) -> None:
    agent = _tcp(agents)
    client = RawClient(agent.address)
    try:
        assert isinstance(client.call(StatusRequest()), AgentInfo)
        # replay: the same sealed frame again
        frame = client.session.seal(codec.encode(StatusRequest()))
        first = codec.decode(client.session.unseal(client.root.submit(frame)))
        assert isinstance(first, AgentInfo)
        replayed = codec.decode(client.session.unseal(client.root.submit(frame)))
        assert isinstance(replayed, ErrorReply) and replayed.code == "protocol"
        assert "counter" in replayed.message
    finally:
        client.close()
    client = RawClient(agent.address)
    try:
        tampered = bytearray(client.session.seal(codec.encode(ReloadRequest(("os",)))))
        tampered[12] ^= 0x20
        reply = codec.decode(client.session.unseal(client.root.submit(bytes(tampered))))
        assert isinstance(reply, ErrorReply) and reply.code == "protocol"
        # the session is poisoned now: even a good message is refused
        reply = client.call(StatusRequest())
        assert isinstance(reply, ErrorReply)
    finally:
        client.close()
    client = RawClient(agent.address)
    try:
        unsealed = codec.encode(StatusRequest())
        reply = codec.decode(client.session.unseal(client.root.submit(unsealed)))
        assert isinstance(reply, ErrorReply) and reply.code == "protocol"
    finally:
        client.close()


def test_only_the_two_byte_methods_are_reachable(agents: Callable[..., Agent]) -> None:
    agent = agents()
    client = RawClient(agent.address, secret=None)
    try:
        for name in ("get_service_name", "exposed_submit", "_state", "__dict__", "on_connect"):
            with pytest.raises(AttributeError):
                getattr(client.root, name)
        # a non-bytes argument is refused without touching it
        reply = codec.decode(client.session.unseal(client.root.submit("text")))
        assert isinstance(reply, ErrorReply) and reply.code == "protocol"
        assert "<reloadctl agent>" in repr(client.root)
        # poll takes only poll requests; submit takes no poll request
        reply = client.call(StatusRequest(), method="poll")
        assert isinstance(reply, ErrorReply) and reply.code == "protocol"
        reply = client.call(PollRequest("nope"))
        assert isinstance(reply, ErrorReply) and reply.code == "protocol"
        reply = client.call(PollRequest("0123456789abcdef", wait_s=0.0), method="poll")
        assert isinstance(reply, ErrorReply) and reply.code == "unknown_job"
    finally:
        client.close()


def test_garbage_and_oversized_frames_drop_the_connection_quietly() -> None:
    """Runs the agent in a subprocess: its stderr must stay empty whatever peers send."""
    with short_tmpdir() as d:
        env = {"XDG_RUNTIME_DIR": str(d), "RELOADCTL_SECRET": SECRET.decode()}
        proc = AgentProcess(env=env, listen="tcp://127.0.0.1:0")
        try:
            address = proc.address
            host, port = address[len("tcp://") :].rsplit(":", 1)
            hwm_before = proc.vm_hwm_kib()

            def raw() -> socket.socket:
                return socket.create_connection((host, int(port)), timeout=5)

            def authed() -> socket.socket:
                s = raw()
                client = auth.ClientHandshake(SECRET, require_mac=True)
                s.sendall(client.answer(auth.read_frame(lambda n: recv_exact(s, n))))
                client.finish(auth.read_frame(lambda n: recv_exact(s, n)))
                return s

            pre_auth = [
                b"\xff" * 64,  # garbage instead of a proof frame
                struct.pack("!I", 0xFFFFFFFF) + b"x" * 100,  # absurd length
                struct.pack("!I", auth.MAX_FRAME + 1),
                struct.pack("!I", 5) + b"\xc1\xc1\xc1\xc1\xc1",  # not msgpack
                struct.pack("!I", 3) + msgpack.packb([1, 2]),  # not a map
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            ]
            for payload in pre_auth:
                s = raw()
                try:
                    recv_exact(s, 4)  # the hello header arrives first
                    s.sendall(payload)
                    assert closed_by_peer(s), payload[:16]
                finally:
                    s.close()
            bomb = zlib.compress(b"\0" * (64 * 1024 * 1024))
            post_auth = [
                struct.pack("!LB", 500 * 1024 * 1024, 0) + b"x" * 1000,  # oversized rpyc frame
                struct.pack("!LB", len(bomb), 1) + bomb + b"\n",  # compressed (a zlib bomb)
                struct.pack("!LB", 10, 0) + b"\xff" * 10 + b"\n",  # brine garbage
                struct.pack("!LB", 3, 0) + b"\x01\x02",  # truncated, then EOF
            ]
            for payload in post_auth:
                s = authed()
                try:
                    s.sendall(payload)
                    if payload.endswith(b"\x01\x02"):
                        s.shutdown(socket.SHUT_WR)
                    assert closed_by_peer(s), payload[:16]
                finally:
                    s.close()
            # still serving, memory did not balloon
            info = execute(
                address, StatusRequest(), secret=Secret(SECRET), connect_timeout=2, timeout=10
            )
            assert isinstance(info, AgentInfo)
            assert proc.vm_hwm_kib() - hwm_before < 32 * 1024
        finally:
            _out, err = proc.stop()
        assert proc.proc.returncode == 0
        assert err == b"", err.decode(errors="replace")


def test_connection_flood_is_bounded(agents: Callable[..., Agent]) -> None:
    baseline_threads = threading.active_count()
    agent = _tcp(agents)
    host, port = agent.address[len("tcp://") :].rsplit(":", 1)
    silent = [socket.create_connection((host, int(port)), timeout=5) for _ in range(40)]
    try:
        time.sleep(0.5)
        # at most 16 connection threads, at most 8 of them holding a pending handshake
        assert threading.active_count() - baseline_threads <= 1 + 16
        still_open = [s for s in silent if not closed_by_peer(s, timeout=0.05)]
        assert len(still_open) <= 8
        # the silent ones are dropped at the handshake deadline; then real clients get in
        assert all(closed_by_peer(s, timeout=5) for s in still_open)
        assert isinstance(run(agent, StatusRequest()), AgentInfo)
    finally:
        for s in silent:
            s.close()


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_fds_and_threads_return_to_baseline_after_stop(
    runtime_dir: Path, target_module: tuple[str, Path]
) -> None:
    fds, threads = _fd_count(), threading.active_count()
    agent = start("tcp://127.0.0.1:0", secret=SECRET)
    try:
        for _ in range(3):
            run(agent, StatusRequest())
        run(agent, ReloadRequest((target_module[0],)))
        idle = RawClient(agent.address)  # a client still connected when the agent stops
    finally:
        agent.stop()
    with pytest.raises(EOFError):
        idle.call(StatusRequest())
    idle.close()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and (threading.active_count() > threads or _fd_count() > fds):
        time.sleep(0.05)
    assert threading.active_count() == threads, threading.enumerate()
    assert _fd_count() == fds
    with pytest.raises(TargetUnreachable):
        run(agent, StatusRequest())


def test_job_results_are_polled_by_cursor(
    agents: Callable[..., Agent], target_module: tuple[str, Path]
) -> None:
    agent = agents()
    client = RawClient(agent.address, secret=None)
    try:
        accepted = client.call(ReloadRequest((target_module[0], "rc_other")))
        assert isinstance(accepted, JobAccepted)
        events = client.call(PollRequest(accepted.job, 0, 5.0), method="poll")
        while not events.done:  # type: ignore[union-attr]
            events = client.call(PollRequest(accepted.job, events.cursor, 5.0), method="poll")  # type: ignore[union-attr]
        again = client.call(PollRequest(accepted.job, 1, 0.0), method="poll")
        assert again.cursor == 2 and [r.module for r in again.results] == ["rc_other"]  # type: ignore[union-attr]
    finally:
        client.close()


SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


@pytest.mark.skipif(
    os.getuid() != 0 or SYSTEM_PYTHON is None, reason="needs root and a system python3"
)
def test_unix_peer_with_another_uid_is_rejected(runtime_dir: Path) -> None:
    sock_dir = runtime_dir / "open"
    sock_dir.mkdir()
    sock_dir.chmod(0o755)
    runtime_dir.chmod(0o755)
    path = sock_dir / "a.sock"
    agent = start(f"unix://{path}")
    try:
        assert (path.stat().st_mode & 0o777) == 0o600
        path.chmod(0o777)  # only the uid check is left to stop the intruder
        code = textwrap.dedent(
            f"""
            import socket
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            s.connect({str(path)!r})
            print(len(s.recv(100)))
            """
        )
        # The venv's interpreter may sit where uid 65534 cannot read; the system one will do.
        out = subprocess.run(
            [SYSTEM_PYTHON or sys.executable, "-c", code],
            check=False,
            user=65534,
            capture_output=True,
            timeout=20,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == b"0"  # closed without even a hello
        assert isinstance(run(agent, StatusRequest(), secret=None), AgentInfo)
    finally:
        agent.stop()
        runtime_dir.chmod(0o700)


def test_authenticated_peer_stalling_mid_frame_is_dropped(
    agents: Callable[..., Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    from reloadctl.agent import server

    monkeypatch.setattr(server, "FRAME_DEADLINE_S", 0.5)
    monkeypatch.setattr(server, "IO_TIMEOUT_S", 0.1)
    agent = _tcp(agents)
    host, port = agent.address[len("tcp://") :].rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    try:
        client = auth.ClientHandshake(SECRET, require_mac=True)
        s.sendall(client.answer(auth.read_frame(lambda n: recv_exact(s, n))))
        client.finish(auth.read_frame(lambda n: recv_exact(s, n)))
        s.sendall(struct.pack("!LB", 100, 0) + b"x" * 10)  # a frame that never completes
        started = time.monotonic()
        assert closed_by_peer(s, timeout=5)
        assert time.monotonic() - started < 3
    finally:
        s.close()
    assert isinstance(run(agent, StatusRequest()), AgentInfo)


def test_random_sealed_payloads_only_get_error_replies(agents: Callable[..., Agent]) -> None:
    import random

    rng = random.Random(1234)
    agent = _tcp(agents)
    client = RawClient(agent.address)
    try:
        valid = codec.encode(ReloadRequest(("m",)), 1)  # protocol 1, as before v2
        for i in range(300):
            if i % 2:
                payload = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 200)))
            else:  # a valid message with a few bytes flipped
                mutated = bytearray(valid)
                for _ in range(rng.randrange(1, 4)):
                    mutated[rng.randrange(len(mutated))] = rng.getrandbits(8)
                payload = bytes(mutated)
            raw = client.root.submit(client.session.seal(payload))
            reply = codec.decode_reply(client.session.unseal(raw))
            if isinstance(reply, ErrorReply):
                assert reply.code in {"protocol", "forbidden", "busy"}, reply
            else:  # a mutation that is still a valid message is served normally
                assert isinstance(reply, (JobAccepted, AgentInfo)), reply
        assert isinstance(client.call(StatusRequest()), AgentInfo)
    finally:
        client.close()
