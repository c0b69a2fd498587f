"""Agent lifecycle: idempotent start, private socket dir, stale sockets, kill switch, exit, fork."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentkit import SECRET

from reloadctl.agent import dispatch, lifecycle, start
from reloadctl.client.connection import execute
from reloadctl.errors import AgentAlreadyRunning, AgentError, ConfigError, SecretError
from reloadctl.proto.messages import AgentInfo, ReloadRequest, StatusRequest
from reloadctl.results import ModuleResult
from reloadctl.secrets import Secret


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


# -- start(loop=...): reloads run on the service's event loop -------------------------------

LOOP_MODULE_V1 = """
import threading
BODY_THREAD = threading.current_thread().name
A = 1
B = 1
def value():
    return A
"""


@pytest.fixture
def loop_module(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    import uuid

    name = f"loopmod_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.py"
    path.write_text(LOOP_MODULE_V1)
    sys.path.insert(0, str(tmp_path))
    try:
        yield name, path
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


@pytest.fixture
def service_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="service-loop", daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _edit(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def _reload(address: str, name: str) -> ModuleResult:
    results = execute(
        address, ReloadRequest(modules=(name,)), secret=None, connect_timeout=2, timeout=20
    )
    assert isinstance(results, tuple) and len(results) == 1
    return results[0]


def test_loop_option_runs_every_swap_on_the_event_loop(
    runtime_dir: Path,
    loop_module: tuple[str, Path],
    service_loop: asyncio.AbstractEventLoop,
) -> None:
    name, path = loop_module
    module = importlib.import_module(name)
    assert module.BODY_THREAD == "MainThread"
    agent = start(loop=service_loop)
    assert agent.loop is service_loop

    # A coroutine checks an invariant of the module at every step it takes on the loop:
    # with the swap on the loop, it can never observe A and B from different versions.
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    async def watch() -> None:
        while not stop.is_set():
            seen.append((module.A, module.B))
            await asyncio.sleep(0)

    watcher = asyncio.run_coroutine_threadsafe(watch(), service_loop)
    try:
        _edit(path, "A = 1\nB = 1", "A = 2\nB = 2")
        result = _reload(agent.address, name)
        assert result.status == "reloaded", result
        assert module.BODY_THREAD == "service-loop"  # the new body ran on the loop
        assert module.value() == 2
        time.sleep(0.05)
    finally:
        stop.set()
        watcher.result(timeout=10)
    assert all(a == b for a, b in seen), [p for p in seen if p[0] != p[1]][:3]
    assert (1, 1) in seen and (2, 2) in seen


def test_loop_that_never_runs_the_reload_changes_nothing(
    runtime_dir: Path,
    loop_module: tuple[str, Path],
    service_loop: asyncio.AbstractEventLoop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dispatch, "LOOP_START_TIMEOUT_S", 0.5)
    name, path = loop_module
    module = importlib.import_module(name)
    agent = start(loop=service_loop)
    unblock = threading.Event()
    service_loop.call_soon_threadsafe(unblock.wait, 10)  # a blocked event loop
    try:
        _edit(path, "A = 1\nB = 1", "A = 3\nB = 3")
        result = _reload(agent.address, name)
        assert result.status == "failed"
        assert result.error is not None and result.error.type == "AgentError"
        assert "did not run the reload within 0.5 s" in result.error.message
        assert "nothing was changed" in result.error.message
    finally:
        unblock.set()
    # The loop runs again: the abandoned call must not apply the reload late.
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0.1), service_loop).result(timeout=10)
    assert module.A == 1 and module.BODY_THREAD == "MainThread"
    assert _reload(agent.address, name).status == "reloaded"  # the loop is back: it works
    assert module.A == 3


def test_loop_can_be_attached_to_a_running_agent_once(
    runtime_dir: Path, service_loop: asyncio.AbstractEventLoop
) -> None:
    agent = start()  # e.g. started by the launcher before the service made its loop
    before = agent.loop
    assert before is None
    assert start(loop=service_loop) is agent
    assert agent.loop is service_loop
    other = asyncio.new_event_loop()
    try:
        with pytest.raises(AgentAlreadyRunning, match="loop"):
            start(loop=other)
    finally:
        other.close()


# -- cost to the host -------------------------------------------------------------------------


def test_import_and_idle_agent_load_no_rpyc_engine_or_typing(runtime_dir: Path) -> None:
    code = """
        import sys, time
        import reloadctl.agent
        after_import = sorted(m for m in sys.modules if m.startswith("reloadctl"))
        agent = reloadctl.agent.start()
        agent.wait_serving(5)
        time.sleep(0.2)
        # (ast is not checked: it comes with dataclasses, which the settings are made of)
        heavy = [m for m in ("rpyc", "msgpack", "typing", "reloadctl.agent.engine",
                             "tempfile", "ipaddress", "pathlib") if m in sys.modules]
        from reloadctl.client.connection import execute
        from reloadctl.proto.messages import StatusRequest
        info = execute(agent.address, StatusRequest(), secret=None, connect_timeout=5, timeout=10)
        print(after_import, heavy, info.pid == __import__("os").getpid(),
              "reloadctl.agent.engine" in sys.modules)
    """
    out = _run_child(code, {"XDG_RUNTIME_DIR": str(runtime_dir)})
    assert out.returncode == 0, out.stderr
    # import: the package file only; an idle agent: none of the heavy modules; a status
    # answered without loading the engine
    assert out.stdout.strip() == "['reloadctl', 'reloadctl.agent'] [] True False"


def test_stop_before_any_client_ends_the_thread_at_once(runtime_dir: Path) -> None:
    agent = start()
    path = Path(agent.address[len("unix://") :])
    assert agent.wait_serving(5)
    thread = agent._thread
    assert thread is not None and thread.is_alive()
    started = time.monotonic()
    agent.stop()
    assert time.monotonic() - started < 1.0
    assert not thread.is_alive()  # woken from its wait for a first client
    assert not path.exists()


def test_bad_settings_raise_from_start_not_from_the_thread(runtime_dir: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        start(f"unix://{runtime_dir}/missing/dir/a.sock")
    with pytest.raises(ConfigError):
        start("tcp://127.0.0.1:99999")
    assert lifecycle.current_agent() is None


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
