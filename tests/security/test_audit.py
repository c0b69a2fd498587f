"""Audit trail and secrecy: every request is logged with its id, peer, modules and outcome;
``sys.audit`` sees each reload; the secret shows up in no log line, repr or error."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from seckit import OPENSSL

from agentkit import SECRET, short_tmpdir  # isort: skip
from reloadctl.agent import start
from reloadctl.client.connection import execute
from reloadctl.errors import TargetAuthFailed, TargetRefused
from reloadctl.proto.messages import ReloadRequest, StatusRequest
from reloadctl.secrets import Secret


@pytest.fixture
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for var in ("RELOADCTL_SECRET", "RELOADCTL_SECRET_FILE", "RELOADCTL_AGENT_LISTEN"):
        monkeypatch.delenv(var, raising=False)
    with short_tmpdir() as d:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(d))
        sys.path.insert(0, str(d))
        try:
            yield d
        finally:
            sys.path.remove(str(d))


def test_requests_are_logged_with_id_peer_modules_and_outcome(
    runtime_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"rc_audit_{uuid.uuid4().hex[:8]}"
    path = runtime_dir / f"{name}.py"
    path.write_text("VALUE = 1\n")
    __import__(name)
    caplog.set_level(logging.DEBUG, logger="reloadctl")
    agent = start("tcp://127.0.0.1:0", secret=SECRET)
    try:
        path.write_text("VALUE = 2\n")
        results = execute(
            agent.address,
            ReloadRequest((name,)),
            secret=Secret(SECRET),
            connect_timeout=3,
            timeout=10,
        )
        assert [r.status for r in results] == ["reloaded"]  # type: ignore[union-attr]
        with pytest.raises(TargetAuthFailed) as failed:
            execute(
                agent.address,
                StatusRequest(),
                secret=Secret(b"a wrong secret"),
                connect_timeout=3,
                timeout=5,
            )
        shown = [str(failed.value), repr(failed.value), repr(agent), repr(agent.config)]
    finally:
        agent.stop()
        sys.modules.pop(name, None)
    text = "\n".join(r.getMessage() for r in caplog.records)
    accepted = re.search(
        rf"request (r\d+) from 127\.0\.0\.1:\d+: reload \['{name}'\] accepted as job (\w+)", text
    )
    assert accepted, text
    request_id, job = accepted.groups()
    assert re.search(
        rf"job {job} from 127\.0\.0\.1:\d+ request {request_id} done: {name}=reloaded", text
    ), text
    assert re.search(r"rejected a connection: 127\.0\.0\.1:\d+: .*wrong secret", text), text
    for where in [text, *shown]:
        assert SECRET.decode() not in where
        assert "a wrong secret" not in where  # nor the one a client tried


def test_secret_never_reaches_argv_or_the_environment_listing(runtime_dir: Path) -> None:
    """The launcher takes a secret *file*; /proc/<pid>/cmdline shows the path only."""
    secret_file = runtime_dir / "secret"
    secret_file.write_bytes(SECRET)
    secret_file.chmod(0o600)
    code = "import sys, time; print('ready', flush=True); sys.stdin.read()"
    script = runtime_dir / "prog.py"
    script.write_text(code)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reloadctl.agent",
            "--listen",
            "tcp://127.0.0.1:0",
            "--secret-file",
            str(secret_file),
            str(script),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert SECRET not in cmdline
    finally:
        _out, err = proc.communicate(input=b"", timeout=20)
    assert SECRET not in err


@pytest.mark.skipif(OPENSSL is None, reason="needs openssl")
def test_tls_rejections_are_logged_without_key_material(
    runtime_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from seckit import make_pki

    from reloadctl.client.connection import TlsSettings

    pki = make_pki(runtime_dir)
    caplog.set_level(logging.INFO, logger="reloadctl")
    agent = start(
        "tls://127.0.0.1:0", tls_cert=pki.server_cert, tls_key=pki.server_key, tls_ca=pki.ca
    )
    try:
        with pytest.raises(TargetAuthFailed):
            execute(
                agent.address,
                StatusRequest(),
                secret=None,
                connect_timeout=3,
                timeout=5,
                tls=TlsSettings(ca=pki.ca),
            )
        execute(
            agent.address,
            StatusRequest(),
            secret=None,
            connect_timeout=3,
            timeout=5,
            tls=TlsSettings(ca=pki.ca, cert=pki.client_cert, key=pki.client_key),
        )
    finally:
        agent.stop()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "TLS handshake failed" in text
    assert "(cn=operator)" in text  # the verified client identity is the audited peer
    key = Path(pki.server_key).read_text().splitlines()[1]
    assert key not in text


_EXIT_FROM_HOOK = threading.Event()


def _exiting_hook(event: str, args: tuple[object, ...]) -> None:
    if event == "reloadctl.reload" and _EXIT_FROM_HOOK.is_set():
        raise SystemExit("the host says no")


sys.addaudithook(_exiting_hook)  # permanent, inert unless the flag is set


def test_audit_hook_raising_system_exit_is_a_veto(runtime_dir: Path) -> None:
    agent = start("tcp://127.0.0.1:0", secret=SECRET)
    _EXIT_FROM_HOOK.set()
    try:
        with pytest.raises(TargetRefused, match="SystemExit") as info:
            execute(
                agent.address,
                ReloadRequest(("json",)),
                secret=Secret(SECRET),
                connect_timeout=3,
                timeout=10,
            )
        assert info.value.code == "forbidden"
    finally:
        _EXIT_FROM_HOOK.clear()
        agent.stop()


def test_an_agent_raising_system_exit_does_not_end_the_client(runtime_dir: Path) -> None:
    """A hostile (authenticated) agent whose method raises SystemExit: rpyc would re-raise
    it in the client; the client turns it into a protocol error."""
    from reloadctl.agent.config import build_config
    from reloadctl.agent.listener import listen
    from reloadctl.agent.server import AgentServer
    from reloadctl.agent.service import AgentService
    from reloadctl.errors import RemoteProtocolError

    class Hostile(AgentService):  # type: ignore[misc]
        def exposed_submit(self, frame: object) -> bytes:
            raise SystemExit(0)

    cfg = build_config("tcp://127.0.0.1:0", secret=SECRET)
    bound = listen(cfg.listen)
    server = AgentServer(cfg, bound.sock, lambda session, peer: Hostile(None, session, peer))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for _ in range(2):
            with pytest.raises(RemoteProtocolError, match="SystemExit"):
                execute(
                    f"tcp://127.0.0.1:{bound.address.port}",
                    StatusRequest(),
                    secret=Secret(SECRET),
                    connect_timeout=3,
                    timeout=5,
                )
    finally:
        server.close()
        thread.join(5)
