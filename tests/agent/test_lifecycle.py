"""Agent lifecycle: idempotent start, private socket dir, stale sockets, kill switch, exit, fork."""

from __future__ import annotations

import logging
import os
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentkit import SECRET, short_tmpdir

from reloadctl.agent import lifecycle, start
from reloadctl.client.connection import execute
from reloadctl.errors import AgentAlreadyRunning, AgentError, ConfigError, SecretError
from reloadctl.proto.messages import AgentInfo, StatusRequest
from reloadctl.secrets import Secret

ENV_VARS = (
    "RELOADCTL_SECRET",
    "RELOADCTL_SECRET_FILE",
    "RELOADCTL_AGENT_LISTEN",
    "RELOADCTL_AGENT_ALLOW",
    "RELOADCTL_AGENT_READ_ONLY",
    "RELOADCTL_AGENT_DISABLE",
    "RELOADCTL_AGENT_MAX_CONNECTIONS",
)


@pytest.fixture
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    with short_tmpdir() as d:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(d))
        yield d
        agent = lifecycle.current_agent()
        if agent is not None:
            agent.stop()


def _status(address: str, secret: bytes | None = None) -> AgentInfo:
    info = execute(
        address,
        StatusRequest(),
        secret=None if secret is None else Secret(secret),
        connect_timeout=2,
        timeout=5,
    )
    assert isinstance(info, AgentInfo)
    return info


def test_default_socket_is_private_and_removed_on_stop(runtime_dir: Path) -> None:
    agent = start()
    path = Path(agent.address[len("unix://") :])
    assert path.parent == runtime_dir / "reloadctl"
    assert path.name.endswith(f"-{os.getpid()}.sock")
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _status(agent.address).pid == os.getpid()
    agent.stop()
    assert not path.exists()
    assert not agent.running
    agent.stop()  # idempotent


def test_start_is_idempotent(runtime_dir: Path) -> None:
    first = start()
    assert start() is first
    assert start(first.address) is first
    with pytest.raises(AgentAlreadyRunning, match=first.address):
        start(f"unix://{runtime_dir}/other.sock")
    with pytest.raises(AgentAlreadyRunning):
        start(read_only=True)
    first.stop()
    second = start(read_only=True)
    assert second is not first and second.running


def test_plain_start_returns_whatever_agent_runs(runtime_dir: Path) -> None:
    # e.g. the launcher started a TCP agent with --secret-file; the app then calls start()
    first = start("tcp://127.0.0.1:0", secret=SECRET, allow=["app.*"])
    assert start() is first
    assert start("tcp://127.0.0.1:0") is first  # any free port: the running one will do
    assert start(secret=SECRET, allow=["app.*"]) is first
    with pytest.raises(AgentAlreadyRunning, match="secret"):
        start(secret=b"another")
    with pytest.raises(AgentAlreadyRunning, match="allow"):
        start(allow=["other.*"])
    with pytest.raises(AgentAlreadyRunning, match="listen"):
        start("tcp://127.0.0.2:0", secret=SECRET)


def test_tcp_without_secret_is_refused_at_start(runtime_dir: Path) -> None:
    with pytest.raises(SecretError, match="RELOADCTL_SECRET_FILE"):
        start("tcp://127.0.0.1:0")
    assert lifecycle.current_agent() is None


def test_secret_file_from_environment(runtime_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = runtime_dir / "secret"
    secret_file.write_bytes(SECRET + b"\n")
    secret_file.chmod(0o644)
    monkeypatch.setenv("RELOADCTL_SECRET_FILE", str(secret_file))
    with pytest.raises(SecretError, match="chmod 600"):
        start("tcp://127.0.0.1:0")
    secret_file.chmod(0o600)
    agent = start("tcp://127.0.0.1:0")
    assert _status(agent.address, SECRET).pid == os.getpid()


def test_non_loopback_bind_warns(runtime_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="reloadctl"):
        agent = start("tcp://0.0.0.0:0", secret=SECRET)
    assert any("not loopback" in r.getMessage() for r in caplog.records)
    port = int(agent.address.rsplit(":", 1)[1])
    assert _status(f"tcp://127.0.0.1:{port}", SECRET).pid == os.getpid()


def test_loose_or_foreign_socket_dir_refused(runtime_dir: Path) -> None:
    sock_dir = runtime_dir / "reloadctl"
    sock_dir.mkdir(mode=0o755)
    sock_dir.chmod(0o755)
    with pytest.raises(ConfigError, match="chmod 700"):
        start()
    if os.getuid() == 0:
        sock_dir.chmod(0o700)
        os.chown(sock_dir, 65534, 65534)
        with pytest.raises(ConfigError, match="belongs to uid 65534"):
            start()
    sock_dir.rmdir()
    sock_dir.symlink_to(runtime_dir)
    with pytest.raises(ConfigError, match="symlink"):
        start()


def test_stale_socket_replaced_live_socket_refused(runtime_dir: Path) -> None:
    path = runtime_dir / "a.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    agent = start(f"unix://{path}")
    assert _status(agent.address).pid == os.getpid()
    agent.stop()
    live = socket.socket(socket.AF_UNIX)
    try:
        live.bind(str(path))
        live.listen()
        with pytest.raises(AgentError, match="already listening"):
            start(f"unix://{path}")
        assert path.exists()  # not ours: left alone
    finally:
        live.close()
        path.unlink()
    path.write_text("not a socket")
    with pytest.raises(AgentError, match="not a socket"):
        start(f"unix://{path}")


def test_kill_switch(runtime_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELOADCTL_AGENT_DISABLE", "1")
    agent = start()
    assert not agent.enabled and not agent.running and agent.address == ""
    assert not (runtime_dir / "reloadctl").exists()
    agent.stop()
    monkeypatch.setenv("RELOADCTL_AGENT_DISABLE", "garbage")  # fails safe: still disabled
    assert not start().enabled


def _run_child(
    code: str, env: dict[str, str], timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
        check=False,
    )


def test_exit_stops_the_agent_quickly_and_removes_the_socket(runtime_dir: Path) -> None:
    code = """
        import reloadctl.agent, socket
        a = reloadctl.agent.start()
        s = socket.socket(socket.AF_UNIX); s.connect(a.address[7:])  # a connection left open
        print(a.address, flush=True)
    """
    started = time.monotonic()
    out = _run_child(code, {"XDG_RUNTIME_DIR": str(runtime_dir)})
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - started < 10
    assert out.stderr == ""
    path = Path(out.stdout.strip()[len("unix://") :])
    assert path.parent.is_dir() and not path.exists()


def test_forked_child_forgets_the_parent_agent(runtime_dir: Path) -> None:
    code = """
        import os, sys
        import reloadctl.agent
        from reloadctl.agent import lifecycle
        from reloadctl.client.connection import execute
        from reloadctl.proto.messages import StatusRequest
        a = reloadctl.agent.start()
        pid = os.fork()
        if pid == 0:
            ok = lifecycle.current_agent() is None and not a.running
            b = reloadctl.agent.start()  # the child may start its own agent
            ok = ok and b is not a and b.address != a.address and str(os.getpid()) in b.address
            info = execute(b.address, StatusRequest(), secret=None, connect_timeout=2, timeout=5)
            ok = ok and info.pid == os.getpid()
            b.stop()
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        info = execute(a.address, StatusRequest(), secret=None, connect_timeout=2, timeout=5)
        assert info.pid == os.getpid(), info
        assert os.path.exists(a.address[7:])  # the child did not remove the parent's socket
        print(os.waitstatus_to_exitcode(status))
    """
    out = _run_child(code, {"XDG_RUNTIME_DIR": str(runtime_dir)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"
    assert out.stderr == ""
