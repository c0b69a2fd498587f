"""Where the agent listens: the private socket dir, stale and live sockets, TCP binds."""

from __future__ import annotations

import logging
import os
import socket
import stat
from pathlib import Path

import pytest
from agentkit import SECRET, agent_status

from reloadctl.agent import start
from reloadctl.errors import AgentError, ConfigError


def test_default_socket_is_private_and_removed_on_stop(runtime_dir: Path) -> None:
    agent = start()
    path = Path(agent.address[len("unix://") :])
    assert path.parent == runtime_dir / "reloadctl"
    assert path.name.endswith(f"-{os.getpid()}.sock")
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert agent_status(agent.address).pid == os.getpid()
    agent.stop()
    assert not path.exists()
    assert not agent.running
    agent.stop()  # idempotent


def test_non_loopback_bind_warns(runtime_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="reloadctl"):
        agent = start("tcp://0.0.0.0:0", secret=SECRET)
    assert any("not loopback" in r.getMessage() for r in caplog.records)
    port = int(agent.address.rsplit(":", 1)[1])
    assert agent_status(f"tcp://127.0.0.1:{port}", SECRET).pid == os.getpid()


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
    assert agent_status(agent.address).pid == os.getpid()
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


def test_stale_sockets_of_this_pid_are_removed_at_start(runtime_dir: Path) -> None:
    # e.g. left by this very process under another program name before it exec'd
    sock_dir = runtime_dir / "reloadctl"
    sock_dir.mkdir(mode=0o700)
    stale_path = sock_dir / f"oldprog-{os.getpid()}.sock"
    other_path = sock_dir / "oldprog-1.sock"  # another pid: not ours to judge here
    for path in (stale_path, other_path):
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    agent = start()
    assert not stale_path.exists()
    assert other_path.exists()
    assert Path(agent.address[len("unix://") :]).exists()
