"""The one agent of a process: idempotent start, settings, kill switch, errors at start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from agentkit import SECRET, agent_status

from reloadctl.agent import lifecycle, start
from reloadctl.errors import AgentAlreadyRunning, ConfigError, SecretError


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
    with pytest.raises(AgentAlreadyRunning, match="tls_cert, tls_key"):
        start(tls_cert="/etc/reloadctl/agent.pem", tls_key="/etc/reloadctl/agent.key")


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
    assert agent_status(agent.address, SECRET).pid == os.getpid()


def test_kill_switch(runtime_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELOADCTL_AGENT_DISABLE", "1")
    agent = start()
    assert not agent.enabled and not agent.running and agent.address == ""
    assert not (runtime_dir / "reloadctl").exists()
    agent.stop()
    monkeypatch.setenv("RELOADCTL_AGENT_DISABLE", "garbage")  # fails safe: still disabled
    assert not start().enabled


def test_bad_settings_raise_from_start_not_from_the_thread(runtime_dir: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        start(f"unix://{runtime_dir}/missing/dir/a.sock")
    with pytest.raises(ConfigError):
        start("tcp://127.0.0.1:99999")
    assert lifecycle.current_agent() is None
